"""REST and broker together (one database, one notification socket): POST messages reach
members live (connection_id null), reply:true makes the assistant answer in the session,
clear and delete reach members, and the broker's live figures show in /health, /sessions
and /stats."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import TS_RE, Broker, Rest, check_reply, one_of, sql, strict_equal  # noqa: E402

REPLY_TYPES = one_of("status", "response_start", "chunk", "response_complete")


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def poll(fn, want, timeout=3.0):
    """Calls fn() until it returns want (strictly equal) or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if strict_equal(got, want) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def session_clients(rest, sid):
    r = rest.get("/sessions?limit=500")
    for s in (r.body.get("sessions") or []) if isinstance(r.body, dict) else []:
        if s.get("session_id") == sid:
            return s.get("clients")
    return "missing"


def test_figures(t, rest, b):
    def health():
        h = rest.get("/health").body
        return (h.get("status"), h.get("broker"))
    got = poll(health, ("healthy", {"up": True, "connections": 0}))
    t.eq("/health with the broker running: healthy, broker up, 0 connections",
         got, ("healthy", {"up": True, "connections": 0}))
    a = connect(b, "A")
    c = connect(b, "B")
    got = poll(lambda: rest.get("/health").body.get("broker"), {"up": True, "connections": 2})
    t.eq("/health: broker.connections 2 within 3 s", got, {"up": True, "connections": 2})
    got = poll(lambda: rest.get("/stats").body.get("websocket_connections"), 2)
    t.eq("/stats: websocket_connections 2", got, 2)
    sid = rest.new_session(title="shared")
    a.join(sid)
    c.join(sid)
    got = poll(lambda: session_clients(rest, sid), 2)
    t.eq("/sessions: clients 2 within 3 s", got, 2)
    got = poll(lambda: rest.get("/sessions/%s" % sid).body.get("clients"), 2)
    t.eq("/sessions/{id}: clients 2", got, 2)
    got = poll(lambda: rest.get("/stats").body.get("active_sessions"), 1)
    t.eq("/stats: active_sessions 1", got, 1)
    c.close()
    got = poll(lambda: session_clients(rest, sid), 1)
    t.eq("/sessions: clients 1 after one member closed", got, 1)
    got = poll(lambda: rest.get("/health").body.get("broker"), {"up": True, "connections": 1})
    t.eq("/health: connections 1 after one closed", got, {"up": True, "connections": 1})
    a.close()
    got = poll(lambda: rest.get("/stats").body.get("active_sessions"), 0)
    t.eq("/stats: active_sessions 0 once nobody is in it", got, 0)
    got = poll(lambda: session_clients(rest, sid), 0)
    t.eq("/sessions: clients 0", got, 0)


def test_post(t, rest, b):
    sid = rest.new_session()
    a = connect(b, "A")
    c = connect(b, "B")
    a.join(sid)
    c.join(sid)
    a.expect(type="session_update", update_type="user_joined")
    r = rest.post("/sessions/%s/messages" % sid, {"content": "from REST ✓"})
    t.eq("POST messages: 201", r.status, 201)
    m = r.body
    for x in (a, c):
        ev = x.expect(type="session_update", update_type="message_added")
        t.eq("POST messages: %s gets message_added with connection_id null" % x.name, ev,
             {"type": "session_update", "session_id": sid, "update_type": "message_added",
              "message_count": 1,
              "message": {"id": m.get("id"), "seq": 1, "role": "user", "content": "from REST ✓",
                          "created_at": m.get("created_at"), "connection_id": None}})
    t.eq("POST messages without reply: no assistant reply", a.quiet(0.8, type=REPLY_TYPES), [])

    r = rest.post("/sessions/%s/messages" % sid,
                  {"content": "  reply to   this please ", "reply": True})
    t.eq("POST reply:true: 201", r.status, 201)
    for x in (a, c):
        ev = x.expect(type="session_update", update_type="message_added")
        t.eq("POST reply:true: %s gets the message" % x.name,
             (ev["message"]["id"], ev["message"]["connection_id"], ev.get("message_count")),
             (r.body.get("id"), None, 2))
    fa = a.read_reply(sid)
    fb = c.read_reply(sid)
    done = check_reply(t, "REST reply:true", fa, sid, "  reply to   this please ")
    t.ok("REST reply:true: both members get the same stream", strict_equal(fa, fb), "differs")
    if done:
        t.eq("REST reply:true: message_count 3", done.get("message_count"), 3)
        d = rest.get("/sessions/%s" % sid).body
        last = (d.get("messages") or [{}])[-1]
        t.eq("REST reply:true: GET /sessions/{id} shows the stored reply",
             (last.get("id"), last.get("role"), last.get("content")),
             (done.get("message_id"), "assistant", "  reply to   this please "))
        t.eq("REST reply:true: message_count 3 in REST", d.get("message_count"), 3)

    # a member that chats after REST messages still works, counts carry on
    ack = a.chat("and from the socket")
    t.eq("chat after REST messages: message_count 4", ack.get("message_count"), 4)
    a.read_reply(sid)
    c.read_reply(sid)
    a.close()
    c.close()


def test_clear_delete(t, rest, b):
    sid = rest.new_session()
    a = connect(b, "A")
    c = connect(b, "B")
    a.join(sid)
    c.join(sid)
    a.chat("one")
    a.read_reply(sid)
    r = rest.post("/sessions/%s/clear" % sid)
    t.eq("clear: 200 cleared 2", (r.status, r.body.get("cleared")), (200, 2))
    for x in (a, c):
        ev = x.expect(type="session_update", update_type="history_cleared")
        t.eq("clear: %s gets history_cleared message_count 0" % x.name, ev,
             {"type": "session_update", "session_id": sid, "update_type": "history_cleared",
              "message_count": 0})
    c.clear()
    ack = c.chat("after clear")
    t.eq("clear: the next message counts from 1", ack.get("message_count"), 1)
    c.read_reply(sid)
    a.read_reply(sid)

    # clear while a reply streams: the reply is dropped (never stored afterwards)
    text = " ".join("w%d" % i for i in range(150))
    a.chat(text)
    a.expect(timeout=10, type="chunk", chunk_number=3)
    r = rest.post("/sessions/%s/clear" % sid)
    t.eq("clear while streaming: 200", r.status, 200)
    a.expect(type="session_update", update_type="history_cleared")
    time.sleep(1.5)
    code, lines = sql(rest.db, "select role, count(*) from messages where session_id = '%s' "
                      "group by role;" % sid)
    t.eq("clear while streaming: nothing stored after the clear", lines, [])
    t.eq("clear while streaming: REST message_count 0",
         rest.get("/sessions/%s" % sid).body.get("message_count"), 0)
    a.clear()
    c.clear()
    ack = a.chat("fresh")
    t.eq("clear while streaming: the session goes on (count 1)", ack.get("message_count"), 1)
    check_reply(t, "reply after a clear", a.read_reply(sid), sid, "fresh")

    # delete: members are told and detached
    other = rest.new_session()
    c.join(other)  # c is in two sessions; other is current
    r = rest.delete("/sessions/%s" % sid)
    t.eq("delete: 200", r.status, 200)
    for x in (a, c):
        ev = x.expect(type="session_update", update_type="session_deleted")
        t.eq("delete: %s gets session_deleted" % x.name, ev,
             {"type": "session_update", "session_id": sid, "update_type": "session_deleted"})
    e = a.request({"type": "chat", "message": "anyone?"}, type="error")
    t.eq("delete: chat in it afterwards is not_in_session", e.get("code"), "not_in_session")
    e = c.request({"type": "chat", "message": "x", "session_id": sid}, type="error")
    t.eq("delete: chat naming it is session_not_found", e.get("code"), "session_not_found")
    ack = c.chat("still in the other one")
    t.eq("delete: the member's other session is untouched", ack.get("session_id"), other)
    e = a.request({"type": "join_session", "session_id": sid}, type="error")
    t.eq("delete: join it afterwards is session_not_found", e.get("code"), "session_not_found")
    t.ok("delete: the connections stay open", a.ping_ok() and c.ping_ok(), "no pong")

    # delete while a reply streams: members told, the reply dropped, nothing left over
    s3 = rest.new_session()
    a.join(s3)
    c.join(s3)
    a.clear()
    c.clear()
    text = " ".join("d%d" % i for i in range(150))
    a.chat(text)
    c.expect(timeout=10, type="chunk", chunk_number=3, session_id=s3)
    r = rest.delete("/sessions/%s" % s3)
    t.eq("delete while streaming: 200", r.status, 200)
    for x in (a, c):
        x.expect(type="session_update", update_type="session_deleted", session_id=s3)
    time.sleep(1.0)
    stray = [f for f in a.take_all(session_id=s3) + c.take_all(session_id=s3)
             if f.get("type") in ("chunk", "response_complete") and not f.get("is_final")]
    t.ok("delete while streaming: at most a final chunk afterwards, no response_complete",
         not [f for f in stray if f.get("type") == "response_complete"],
         repr(stray[:3]))
    code, lines = sql(rest.db, "select count(*) from messages where session_id = '%s';" % s3)
    t.eq("delete while streaming: no message of it left in the database", lines, ["0"])
    t.ok("delete while streaming: both connections still work", a.ping_ok() and c.ping_ok(),
         "no pong")
    t.eq("delete while streaming: the broker is still running", b.alive(), True)
    a.close()
    c.close()


def test_search(t, rest, b):
    """Messages are stored first and indexed for search after (schema/003): a search sees
    every stored message anyway, deleting rows indexed or not keeps the index whole, and
    the broker indexes on its own when it is idle."""
    def search(sid, q):
        r = rest.get("/sessions/%s/messages?q=%s" % (sid, q))
        return [m["id"] for m in r.body.get("messages", [])] if r.status == 200 else r.status

    def indexed():
        code, out = sql(b.db, "SELECT indexed_id FROM search_state")
        return int(out[0]) if code == 0 and out else out

    def fts_whole():
        # SQLite 3.40 compares the index with the messages table too: only meaningful
        # when every message is indexed
        return sql(b.db, "INSERT INTO messages_fts(messages_fts, rank) "
                   "VALUES ('integrity-check', 1); SELECT 'whole';")

    # The index itself (messages_fts, search_state) is SQLite's FTS5; on PostgreSQL the
    # searches are checked, what its text search keeps is the backend's business.
    lite = not parley.is_pg(b.db)

    def index_eq(name, got, want):
        if lite:
            t.eq(name, got(), want)
        else:
            t.skip(name, "SQLite only: the FTS5 index (messages_fts, search_state)")

    sid = rest.new_session()
    a = connect(b, "A")
    a.join(sid)
    ids = [a.chat(text)["message"]["id"] for text in ("zebra one", "zebra two", "other")]
    t.eq("search right after chat over the socket: both zebra messages", search(sid, "zebra"),
         ids[:2])
    index_eq("search: the index now reaches the last message", indexed, ids[2])
    more = [a.chat(text)["message"]["id"] for text in ("zebra three", "zebra four")]
    index_eq("the broker indexes on its own within 2 s of going idle",
             lambda: poll(indexed, more[1], 2.0), more[1])
    t.eq("search finds the messages the broker indexed", search(sid, "zebra"),
         ids[:2] + more)
    index_eq("the search index is whole (FTS5 integrity-check)", fts_whole, (0, ["whole"]))

    a.close()
    b.stop()

    # REST stores without indexing, and with the broker gone nothing indexes: rows that
    # were never indexed are deleted, and the index must not be touched for them
    sid2 = rest.new_session()
    late = [rest.add_message(sid, "zebra from REST")["id"],
            rest.add_message(sid2, "zebra elsewhere")["id"],
            rest.add_message(sid2, "zebra again")["id"]]
    index_eq("REST messages are stored, not yet indexed", indexed, more[1])
    r = rest.post("/sessions/%s/clear" % sid)
    t.eq("clear a history of indexed and unindexed messages: 200", r.status, 200)
    r = rest.delete("/sessions/%s" % sid2)
    t.eq("delete a session of unindexed messages: 200", r.status, 200)
    index_eq("after clear and delete: still not indexed", indexed, more[1])
    sid3 = rest.new_session()
    last = rest.add_message(sid3, "zebra survives")["id"]
    t.eq("after clear: search finds nothing in the cleared session", search(sid, "zebra"), [])
    index_eq("that search brought the index up to the last message", indexed, last)
    t.eq("search in a third session finds its message", search(sid3, "zebra"), [last])
    index_eq("only the surviving zebra is left in the index",
             lambda: sql(b.db, "SELECT count(*) FROM messages_fts WHERE messages_fts "
                         "MATCH 'zebra'"), (0, ["1"]))
    index_eq("the index is whole at the end", fts_whole, (0, ["whole"]))


def main(t):
    rest = Rest(t)
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port)
    for name, fn in (("live figures", test_figures), ("POST messages", test_post),
                     ("clear and delete", test_clear_delete)):
        with t.section(name):
            fn(t, rest, b)
        parley.close_clients()
    b.stop()
    with t.section("broker stopped"):
        got = poll(lambda: rest.get("/health").body.get("broker"), {"up": False,
                                                                      "connections": 0}, 5)
        t.eq("/health: broker up false within 5 s of the broker stopping", got,
             {"up": False, "connections": 0})
    # no assistant here: its replies would match the searches too
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none")
    with t.section("search"):
        test_search(t, rest, b)  # stops b
    parley.close_clients()
    rest.stop()


parley.run(main)
