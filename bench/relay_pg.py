#!/usr/bin/python3
"""relay_pg: the throwaway PostgreSQL cluster of bench/relay_bench.sh, through
tests/lib/pgcluster.py (Unix socket only, in its own temporary directory; initdb and
pg_ctl as the postgres user through runuser when run as root). Standard library only.

    relay_pg.py start             starts a cluster; prints its directory
    relay_pg.py db DIR NAME       a fresh database NAME (dropped first); prints its --db URI
    relay_pg.py sql DIR NAME SQL  runs SQL on NAME; prints its rows (`|`-separated)
    relay_pg.py pid DIR           the postmaster's pid
    relay_pg.py stop DIR          stops the cluster (pg_ctl, then its pid) and removes DIR

Exits non-zero (with the reason on stderr) when it could not do it.
"""

import os
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
import pgcluster  # noqa: E402


def cluster(base):
    c = pgcluster.Cluster(base=base, prefix="parley-relay-bench-pg-")
    c._initialized = True  # made by `start`: never initdb again here
    return c


def main(argv):
    if len(argv) >= 1 and argv[0] == "start":
        c = pgcluster.Cluster(prefix="parley-relay-bench-pg-")
        try:
            c.start()
        except pgcluster.ClusterError as e:
            if c.base:
                c.destroy()
            print("relay_pg: %s" % e, file=sys.stderr)
            return 1
        print(c.base)
        return 0
    if len(argv) == 3 and argv[0] == "db":
        print(cluster(argv[1]).create_database(argv[2]))
        return 0
    if len(argv) == 4 and argv[0] == "sql":
        code, lines = cluster(argv[1]).psql(argv[2], argv[3])
        print("\n".join(lines))
        return 0 if code == 0 else 1
    if len(argv) == 2 and argv[0] == "pid":
        pid = cluster(argv[1]).postmaster_pid()
        if pid is None:
            return 1
        print(pid)
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        base = argv[1]
        if not os.path.isfile(os.path.join(base, "data", "PG_VERSION")):
            print("relay_pg: %s is not a cluster made by relay_pg.py start" % base,
                  file=sys.stderr)
            return 1
        try:
            cluster(base).stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return 0
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (pgcluster.ClusterError, ValueError, OSError) as e:
        print("relay_pg: %s" % e, file=sys.stderr)
        sys.exit(1)
