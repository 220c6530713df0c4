"""Broker durability: a reply asked for over REST while the broker is down is produced
when it starts; kill -9 during a conversation loses nothing acknowledged, the reply queue
survives and clients rejoin with `since`; a person holding a read transaction open in
the sqlite3 shell (psql in a PostgreSQL pass) stalls nothing."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, check_reply, one_of, sql, strict_equal  # noqa: E402

def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def poll(fn, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if strict_equal(got, want) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def rows(db, sid):
    code, lines = sql(db, "select id, role, content from messages where session_id = '%s' "
                      "order by id;" % sid)
    return lines




def test_reply_while_down(t):
    rest = Rest(t, name="rest-restart")
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, name="broker-restart")
    sid = rest.new_session()
    a = connect(b, "A")
    a.join(sid)
    b.stop()
    t.eq("broker stopped: client closed with 1001", a.wait_closed(5), 1001)
    got = poll(lambda: rest.get("/health").body.get("broker"), {"up": False, "connections": 0},
               5)
    t.eq("broker stopped: /health broker.up false", got, {"up": False, "connections": 0})
    r = rest.post("/sessions/%s/messages" % sid, {"content": "answer me later", "reply": True})
    t.eq("POST reply:true while the broker is down: 201", r.status, 201)
    b.start()

    def last():
        msgs = rest.get("/sessions/%s" % sid).body.get("messages") or []
        return [(m.get("role"), m.get("content")) for m in msgs]
    got = poll(last, [("user", "answer me later"), ("assistant", "answer me later")], 5)
    t.eq("after the broker restarts: the reply is stored within 5 s", got,
         [("user", "answer me later"), ("assistant", "answer me later")])
    code, lines = sql(b.db, "select count(*) from reply_queue;")
    t.eq("after the reply: the reply queue is empty", lines, ["0"])
    got = poll(lambda: rest.get("/health").body.get("broker"), {"up": True, "connections": 0},
               5)
    t.eq("broker restarted: /health broker.up true", got, {"up": True, "connections": 0})
    b.stop()
    rest.stop()


def test_kill9(t):
    b = Broker(t, name="broker-kill9")
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    a.chat("first, fully answered")
    a.read_reply(sid)
    c.read_reply(sid)
    # a burst of chats from both (replies queue up behind each other), then kill -9 as
    # soon as a long reply is streaming
    long_text = " ".join("w%d" % i for i in range(200))
    for i in range(8):
        (a if i % 2 else c).send({"type": "chat", "message": "burst %d" % i})
    a.send({"type": "chat", "message": long_text})
    acked = {}
    deadline = time.monotonic() + 20
    streaming_long = False
    while time.monotonic() < deadline and not streaming_long:
        f = a.expect(timeout=max(0.1, deadline - time.monotonic()),
                     type=one_of("session_update", "chunk", "response_complete"))
        if f.get("update_type") == "message_added":
            acked[f["message"]["id"]] = f["message"]["content"]
        elif f.get("type") == "response_complete":
            acked[f["message_id"]] = "(reply)"
        elif f.get("type") == "chunk" and f.get("text", "").startswith("w0 ") and \
                f.get("chunk_number") == 1:
            streaming_long = True
    t.ok("kill -9: the long reply was streaming", streaming_long, "acked %r" % acked)
    b.kill9()
    t.ok("kill -9: clients see the connection drop", a.wait_closed(5) is not None and
         c.wait_closed(5) is not None, "still open")
    # everything acknowledged (message_added, response_complete) is in the database
    code, lines = sql(b.db, "select id, role, content from messages where session_id = '%s' "
                      "order by id;" % sid)
    stored = {int(ln.split("|", 2)[0]): ln.split("|", 2) for ln in lines}
    missing = [(i, x) for i, x in acked.items() if i not in stored or
               (x != "(reply)" and stored[i][2] != x)]
    t.ok("kill -9: every acknowledged message is in the database", not missing and
         len(acked) >= 11, "missing %r (acked %d, stored %r)" % (missing, len(acked), lines))
    if parley.skip_unless_sqlite(t, "kill -9: database integrity ok",
                                 "PRAGMA integrity_check of the file; a client killed "
                                 "cannot damage PostgreSQL's files", b.db):
        code, lines = sql(b.db, "pragma integrity_check;")
        t.eq("kill -9: database integrity ok", lines, ["ok"])
    last_seen = max(acked) if acked else 0

    b.start()
    # the long message's reply was cut by the kill: it is produced after the restart
    def replied():
        return len([ln for ln in rows(b.db, sid) if ln.split("|", 2)[1:] ==
                    ["assistant", long_text]])
    t.eq("kill -9: the interrupted reply is produced after the restart", poll(replied, 1, 15),
         1)
    t.eq("kill -9: every user message has exactly one complete reply in the end",
         poll(lambda: sql(b.db, "select role, coalesce(status, ''), count(*) from messages "
                          "where session_id = '%s' and coalesce(status, '') <> 'incomplete' "
                          "group by role, status order by role;" % sid)[1],
              ["assistant|complete|10", "user||10"], 8), ["assistant|complete|10", "user||10"])
    # SPEC 8: the text the killed broker had streamed is stored as an incomplete reply
    # (when it had streamed any by its last lease renewal), then the message is answered
    # again
    _, cut = sql(b.db, "select content from messages where session_id = '%s' and "
                 "status = 'incomplete';" % sid)
    t.ok("kill -9: at most one incomplete reply, a prefix of the interrupted one",
         len(cut) <= 1 and all(long_text.startswith(c) and c != long_text for c in cut),
         repr([c[:40] for c in cut]))
    history = rows(b.db, sid)
    a2 = connect(b, "A2")
    j = a2.join(sid, since=last_seen)
    want = [ln for ln in history if int(ln.split("|", 1)[0]) > last_seen]
    got = ["%d|%s|%s" % (m.get("id"), m.get("role"), m.get("content"))
           for m in j.get("messages") or []]
    t.eq("kill -9: rejoin with since gets exactly what came after", got, want)
    t.eq("kill -9: message_count is the whole history", j.get("message_count"), len(history))
    ack = a2.chat("after the crash")
    check_reply(t, "kill -9: the session works after the restart", a2.read_reply(sid), sid,
                "after the crash")
    t.ok("kill -9: ids keep increasing", ack["message"]["id"] > max(
        int(ln.split("|", 1)[0]) for ln in history), repr(ack))
    a2.close()
    b.stop()


def test_sigterm_streaming(t):
    b = Broker(t, name="broker-sigterm-streaming")
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    text = " ".join("s%d" % i for i in range(200))
    ack = a.chat(text)
    a.send({"type": "chat", "message": "queued at shutdown"})
    a.expect(type="session_update", update_type="message_added")
    c.expect(timeout=10, type="chunk", chunk_number=3)
    b.stop()  # exit 0
    for x in (a, c):
        t.eq("SIGTERM while streaming: %s gets close 1001" % x.name, x.wait_closed(5), 1001)
    code, lines = sql(b.db, "select role, content from messages where session_id = '%s' "
                      "and role = 'user' order by id;" % sid)
    t.eq("SIGTERM while streaming: both user messages are stored", lines,
         ["user|" + text, "user|queued at shutdown"])
    b.start()

    def complete():
        return sql(b.db, "select content from messages where session_id = '%s' and "
                   "role = 'assistant' and status = 'complete' order by id;" % sid)[1]
    got = poll(complete, [text, "queued at shutdown"], 12)
    t.eq("SIGTERM while streaming: after a restart both replies are complete, in order", got,
         [text, "queued at shutdown"])
    b.stop()


def test_reader(t):
    b = Broker(t, name="broker-reader")
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    a.chat("before the reader")
    a.read_reply(sid)
    shell = parley.shell(b.db)
    try:
        lines = shell.query("%s\nSELECT count(*) FROM messages;" % shell.BEGIN_READ)
        t.eq("reader: read transaction open, sees 2 messages", lines, ["2"])
        slow = []
        for i in range(20):
            t0 = time.monotonic()
            try:
                (a if i % 2 else c).chat("during read %d" % i, timeout=10)
            except parley.ExpectError as e:
                slow.append((i, "no ack: %s" % e))
                continue
            dt = time.monotonic() - t0
            if dt > 1.5:
                slow.append((i, round(dt, 2)))
        t.ok("reader: 20 chats acknowledged, each within 1.5 s", not slow, repr(slow))
        # the replies get committed too
        for _ in range(20):
            a.read_reply(sid, timeout=20)
        code, lines = sql(b.db, "select count(*) from messages;")
        t.eq("reader: a second shell sees all 42 messages", lines, ["42"])
        lines = shell.query("SELECT count(*) FROM messages;")
        t.eq("reader: the open transaction still reads its snapshot", lines, ["2"])
        lines = shell.query("COMMIT;\nSELECT count(*) FROM messages;")
        t.eq("reader: after COMMIT the shell sees all 42", lines, ["42"])
        t.ok("reader: a ping is still answered", a.ping_ok(), "no pong")
    finally:
        code = shell.close()
    t.eq("reader: %s shell exits 0" % shell.kind, code, 0)
    parley.close_clients()
    b.stop()


def main(t):
    if parley.db_shell_missing(t):
        return
    with t.section("reply asked while the broker is down"):
        test_reply_while_down(t)
    parley.close_clients()
    with t.section("kill -9"):
        test_kill9(t)
    parley.close_clients()
    with t.section("SIGTERM while streaming"):
        test_sigterm_streaming(t)
    parley.close_clients()
    with t.section("read transaction held open"):
        test_reader(t)


parley.run(main)
