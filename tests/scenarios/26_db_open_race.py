"""Several processes opening a new database file at the same moment all start: two
parley-rest and two parley-broker, released together on one file that does not exist
yet (the switch to WAL can answer "database is locked" at once, without the busy
handler; the migrations take turns under BEGIN IMMEDIATE). In a PostgreSQL pass, the
same four on one new, empty database: the migrations must take turns there too (and end
at the newest of schema/pg/, once); the WAL switch of the file is SQLite's alone."""

import os
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, make_tmpdir, sql  # noqa: E402

ROUNDS = 4
READY_S = 60.0  # ready well within a second each on an idle machine; ASan and load: margin


def one_round(t, n):
    db = parley.db_for(make_tmpdir("parley-race-"), "new.db")  # new file, or empty database
    procs = [Rest(t, flags={"--db": db}, start=False, name="rest%d-%d" % (n, i),
                  ready_timeout=READY_S) for i in range(2)]
    procs += [Broker(t, flags={"--db": db}, start=False, name="broker%d-%d" % (n, i),
                     ready_timeout=READY_S) for i in range(2)]
    gate = threading.Barrier(len(procs))
    errors = [None] * len(procs)

    def go(i):
        gate.wait()
        try:
            procs[i].start()
        except Exception as e:  # noqa: BLE001 - reported below
            errors[i] = "%s: %s" % (type(e).__name__, e)
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(procs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.eq("round %d: all 4 processes on one new %s became ready" % (
        n, "database" if parley.is_pg(db) else "file"), errors, [None] * 4)
    if parley.is_pg(db):
        pg_dir = os.path.join(parley.ROOT, "schema", "pg")
        newest = len([f for f in os.listdir(pg_dir) if f.endswith(".sql")]) \
            if os.path.isdir(pg_dir) else None
        t.eq("round %d: the database is at the newest schema version (one schema_version "
             "row)" % n, sql(db, "select count(*), max(version) from schema_version;"),
             (0, ["1|%s" % newest]))
    if parley.skip_unless_sqlite(t, "round %d: the file is in WAL mode at the newest schema "
                                 "version" % n, "the journal mode and PRAGMA user_version "
                                 "of the file", db):
        code, lines = sql(db, "pragma journal_mode; pragma user_version;")
        t.eq("round %d: the file is in WAL mode at the newest schema version" % n, lines,
             ["wal", str(len([f for f in os.listdir(os.path.join(parley.ROOT, "schema"))
                              if f.endswith(".sql")]))])
    if errors == [None] * 4:
        sid = procs[0].new_session(title="after the race")
        r = procs[1].get("/sessions/%s" % sid)
        t.eq("round %d: a session made by one REST is read by the other" % n,
             (r.status, r.body.get("title")), (200, "after the race"))
    for p in procs:
        p.stop(check=False)


def main(t):
    if parley.db_shell_missing(t):
        return
    for n in range(1, ROUNDS + 1):
        with t.section("round %d" % n):
            one_round(t, n)


parley.run(main)
