"""History through the real sqlite3 shell while parley-rest runs, and a person holding
a read transaction open in sqlite3 while the daemon keeps writing. In a PostgreSQL pass
the same through psql (SPEC 7: history is inspected with psql), the reader holding a
REPEATABLE READ transaction; the SQLite file's own settings (WAL) are skipped there."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import TS_RE, Rest, is_pg, sql, ts_sql  # noqa: E402


def test_history(t, rest):
    pg = is_pg(rest.db)
    who = "psql" if pg else "sqlite3"
    sid = rest.new_session(title="Shell view", model_id="echo")
    posted = [rest.add_message(sid, c) for c in ("first", "second ✓", "third | with pipe")]
    code, lines = sql(rest.db, "select role, content from messages where session_id = '%s' "
                      "order by id;" % sid)
    t.eq("%s: shell exits 0 while the daemon runs" % who, code, 0)
    t.eq("%s: roles and contents as words, in order" % who, lines,
         ["user|first", "user|second ✓", "user|third | with pipe"])
    code, lines = sql(rest.db, "select id, %s from messages where session_id = '%s' "
                      "order by id;" % (ts_sql(rest.db, "created_at"), sid))
    t.eq("%s: ids and created_at as the API returned them" % who, lines,
         ["%d|%s" % (m["id"], m["created_at"]) for m in posted])
    t.ok("%s: created_at is ISO-8601 UTC text" % who,
         all(TS_RE.match(ln.split("|", 1)[-1]) for ln in lines), repr(lines))
    code, lines = sql(rest.db, "select title, model, %s, %s from sessions where id = '%s';" % (
        ts_sql(rest.db, "created_at"), ts_sql(rest.db, "updated_at"), sid))
    d = rest.get("/sessions/%s" % sid).body
    t.eq("%s: sessions row matches the API" % who, lines,
         ["Shell view|echo|%s|%s" % (d.get("created_at"), d.get("updated_at"))])
    if pg:
        t.skip("sqlite3: created_at stored as text", "SQLite keeps ISO-8601 text; the "
               "PostgreSQL column's type is the backend's (timestamptz), its value is "
               "checked above")
        t.skip("sqlite3: journal_mode is wal", "a property of the SQLite file")
        code, lines = sql(rest.db, "select count(*) > 0 from schema_version;")
        t.eq("psql: schema versioned (the schema_version table has a row)", lines, ["t"])
        code, lines = sql(rest.db, "select distinct pg_typeof(id)::text from messages;")
        t.ok("psql: message ids are integers", lines in (["bigint"], ["integer"]),
             repr(lines))
    else:
        code, lines = sql(rest.db, "select distinct typeof(created_at) from sessions;")
        t.eq("sqlite3: created_at stored as text", lines, ["text"])
        code, lines = sql(rest.db, "pragma journal_mode;")
        t.eq("sqlite3: journal_mode is wal", lines, ["wal"])
        code, lines = sql(rest.db, "pragma user_version;")
        t.ok("sqlite3: schema versioned (user_version >= 1)",
             len(lines) == 1 and lines[0].isdigit() and int(lines[0]) >= 1, repr(lines))
        code, lines = sql(rest.db, "select distinct typeof(id) from messages;")
        t.eq("sqlite3: message ids are integers", lines, ["integer"])

    # a clear and a delete show up in the database
    rest.post("/sessions/%s/clear" % sid)
    code, lines = sql(rest.db, "select count(*) from messages where session_id = '%s';" % sid)
    t.eq("%s: clear removed the rows" % who, lines, ["0"])
    rest.add_message(sid, "kept until delete")
    rest.delete("/sessions/%s" % sid)
    code, lines = sql(rest.db, "select (select count(*) from sessions where id = '%s'), "
                      "(select count(*) from messages where session_id = '%s');" % (sid, sid))
    t.eq("%s: delete removed the session and its messages" % who, lines, ["0|0"])


def test_read_transaction(t, rest):
    sid = rest.new_session(title="reader")
    rest.add_message(sid, "before the reader")
    shell = parley.shell(rest.db)
    try:
        lines = shell.query("%s\nSELECT count(*) FROM messages WHERE session_id = '%s';" % (
            shell.BEGIN_READ, sid))
        t.eq("reader: read transaction open, sees 1 message", lines, ["1"])

        slow = []
        statuses = []
        for i in range(20):
            t0 = time.monotonic()
            r = rest.post("/sessions/%s/messages" % sid, {"content": "during read %d" % i},
                          timeout=15)
            dt = time.monotonic() - t0
            statuses.append(r.status)
            if dt > 1.0:
                slow.append((i, round(dt, 2)))
        t.eq("reader: 20 POSTs while the read transaction is open all 201", statuses, [201] * 20)
        t.ok("reader: each POST answered within 1 s", not slow, "slow: %r" % slow)
        t0 = time.monotonic()
        r = rest.post("/sessions/new", {"title": "made during read"})
        t.ok("reader: POST /sessions/new answers 201 within 1 s",
             r.status == 201 and time.monotonic() - t0 < 1.0,
             "%s after %.2f s" % (r.status, time.monotonic() - t0))
        other = r.body.get("session_id") if isinstance(r.body, dict) else None
        t0 = time.monotonic()
        r = rest.post("/sessions/%s/clear" % other) if other else None
        t.ok("reader: clear answers 200 within 1 s", r is not None and r.status == 200 and
             time.monotonic() - t0 < 1.0, "%r" % (r and r.status,))
        t0 = time.monotonic()
        r = rest.delete("/sessions/%s" % other) if other else None
        t.ok("reader: delete answers 200 within 1 s", r is not None and r.status == 200 and
             time.monotonic() - t0 < 1.0, "%r" % (r and r.status,))

        d = rest.get("/sessions/%s" % sid).body
        t.eq("reader: the daemon sees its own writes", d.get("message_count"), 21)
        h = rest.get("/health")
        t.eq("reader: /health still healthy-or-degraded 200", h.status, 200)
        t.eq("reader: /health database ok", h.body.get("database"), "ok")

        lines = shell.query("SELECT count(*) FROM messages WHERE session_id = '%s';" % sid)
        t.eq("reader: the open transaction still sees its snapshot", lines, ["1"])
        lines = shell.query("COMMIT;\nSELECT count(*) FROM messages WHERE session_id = '%s';"
                            % sid)
        t.eq("reader: after COMMIT the shell sees all 21", lines, ["21"])
    finally:
        code = shell.close()
    t.eq("reader: %s shell exits 0" % shell.kind, code, 0)


def test_write_then_restart(t, rest):
    """What was acknowledged is in the file after the daemon stops."""
    sid = rest.new_session(title="durable")
    m = rest.add_message(sid, "acknowledged")
    rest.stop()
    code, lines = sql(rest.db, "select id, role, content from messages where session_id = '%s';"
                      % sid)
    t.eq("after stop: the acknowledged message is in the database", lines,
         ["%d|user|acknowledged" % m["id"]])


def main(t):
    if parley.db_shell_missing(t):
        return
    rest = Rest(t)
    with t.section("history via the database's shell"):
        test_history(t, rest)
    with t.section("read transaction held open"):
        test_read_transaction(t, rest)
    with t.section("durable after stop"):
        test_write_then_restart(t, rest)
    rest.stop()


parley.run(main)
