"""pg_cluster: the throwaway PostgreSQL 15 cluster of bench/pg_bench.sh, through
tests/lib/pgcluster.py (initdb and pg_ctl as the `postgres` user when run as root, a
Unix socket in DIR/sock, no TCP). Standard library only, /usr/bin/python3.

    pg_cluster.py start DIR [FSYNC] initdb DIR/data, pg_ctl start; prints the postmaster pid
                                    (FSYNC: on, the default, or off)
    pg_cluster.py create DIR NAME   a fresh database NAME; prints its URI (for --db)
    pg_cluster.py drop DIR NAME     DROP DATABASE NAME WITH (FORCE)
    pg_cluster.py stop DIR          pg_ctl stop -m fast (then SIGQUIT, SIGKILL by pid)

The server inherits the CPU affinity of whoever runs `start` (pg_bench.sh runs it under
taskset). Unlike the tests' cluster, durability is PostgreSQL's default (fsync,
full_page_writes and synchronous_commit on: every commit is flushed to the disk) unless
FSYNC is off (fsync and full_page_writes off, as the tests' cluster: a commit is written
to the kernel, not flushed), and shared_buffers is PostgreSQL's default 128MB; the other
settings are the tests'.
Exit status 0, or 1 with the reason on stderr."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
import pgcluster  # noqa: E402

BENCH_SETTINGS = {
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "'128MB'",
}


def cluster(base, fsync="on"):
    settings = dict(BENCH_SETTINGS, fsync=fsync, full_page_writes=fsync)
    c = pgcluster.Cluster(base=base, settings=settings)
    if os.path.exists(os.path.join(c.data, "PG_VERSION")):
        c._initialized = True
    return c


def main(argv):
    if len(argv) < 3 or argv[1] not in ("start", "create", "drop", "stop"):
        sys.stderr.write(__doc__)
        return 2
    cmd, base = argv[1], argv[2]
    fsync = argv[3] if cmd == "start" and len(argv) > 3 else "on"
    if fsync not in ("on", "off"):
        sys.stderr.write("pg_cluster: FSYNC is on or off, not %r\n" % fsync)
        return 2
    c = cluster(base, fsync)
    try:
        if cmd == "start":
            c.start()
            print(c.postmaster_pid())
        elif cmd == "create":
            print(c.create_database(argv[3]))
        elif cmd == "drop":
            code, lines = c.drop_databases([argv[3]])
            if code != 0:
                raise pgcluster.ClusterError("DROP DATABASE %s: %s" % (argv[3], "\n".join(lines)))
        else:
            c.stop()
    except (pgcluster.ClusterError, ValueError, IndexError, OSError) as e:
        sys.stderr.write("pg_cluster: %s: %s\n" % (cmd, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
