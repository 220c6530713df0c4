"""Broker sessions (flat dialect): connected, ping/pong, create/join/leave/close with two
and three clients, message_added to every member, user_joined/user_left with client
counts, several sessions per connection, typing indicators and their 10 s expiry, SIGTERM
with clients connected (close 1001, exit 0). The assistant is `none` here (no replies)."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import SESSION_ID_RE, TS_RE, Broker, run_cli, sql, strict_equal  # noqa: E402

CONN_RE = r"^[0-9a-f]{12}$"
ADDED_KEYS = {"type", "session_id", "update_type", "message_count", "message"}
MSG_KEYS = {"id", "seq", "role", "content", "created_at", "connection_id", "author"}


def connect(t, b, name):
    c = b.client(name)
    ev = c.expect(type="connected")
    c.id = ev.get("connection_id")
    return c, ev


def test_connect(t, b):
    code, out, _ = run_cli("parley-broker", ["--version"])
    t.eq("--version exits 0", code, 0)
    t.match("--version prints 'parley-broker <version>'", out.strip(), r"^parley-broker \S+$")
    version = out.strip().split(" ", 1)[-1]
    a, ev = connect(t, b, "A")
    t.keys("connected: exactly type, connection_id, message, server_info", ev,
           {"type", "connection_id", "message", "server_info"})
    t.match("connected: connection_id is 12 hex", ev.get("connection_id"), CONN_RE)
    t.eq("connected: message", ev.get("message"), "connected to Parley")
    t.eq("connected: server_info", ev.get("server_info"),
         {"name": "parley", "version": version, "model": "none", "auth_required": False})
    c, ev2 = connect(t, b, "B")
    t.ok("connected: two connections get different ids",
         ev2.get("connection_id") != ev.get("connection_id"), repr(ev2.get("connection_id")))
    for i in range(2):
        pong = a.request({"type": "ping"}, type="pong")
        t.keys("ping -> pong: exactly type, timestamp", pong, {"type", "timestamp"})
        t.match("ping -> pong: timestamp ISO-8601 UTC", pong.get("timestamp"), TS_RE)
    t.eq("ping: nothing else is sent", a.quiet(0.3), [])
    a.close()
    c.close()


def check_added(t, name, ev, sid, content, conn_id, count, cmid=None):
    t.keys("%s: message_added fields" % name, ev, ADDED_KEYS)
    t.eq("%s: session_id" % name, ev.get("session_id"), sid)
    t.eq("%s: message_count" % name, ev.get("message_count"), count)
    m = ev.get("message") or {}
    t.keys("%s: message fields" % name, m, MSG_KEYS | ({"client_msg_id"} if cmid else set()))
    t.is_int("%s: message.id" % name, m.get("id"), 1)
    t.eq("%s: message.seq is its place in the session" % name, m.get("seq"), count)
    t.eq("%s: role user" % name, m.get("role"), "user")
    t.eq("%s: content as sent" % name, m.get("content"), content)
    t.match("%s: created_at" % name, m.get("created_at"), TS_RE)
    t.eq("%s: connection_id of the sender" % name, m.get("connection_id"), conn_id)
    t.eq("%s: author: the sender's default name and connection" % name, m.get("author"),
         {"name": "guest-" + conn_id[:4], "connection_id": conn_id})
    if cmid:
        t.eq("%s: client_msg_id echoed" % name, m.get("client_msg_id"), cmid)


def test_sessions(t, b):
    a, _ = connect(t, b, "A")
    bb, _ = connect(t, b, "B")
    c, _ = connect(t, b, "C")

    ev = a.request({"type": "create_session", "title": "Room ✓"}, type="session_created")
    t.keys("create_session: exactly type, session_id, model, title", ev,
           {"type", "session_id", "model", "title", "reply_mode"})
    sid = ev.get("session_id")
    t.match("create_session: session_id 16 hex", sid, SESSION_ID_RE)
    t.eq("create_session: model is the configured one (none)", ev.get("model"), "none")
    t.eq("create_session: title as given", ev.get("title"), "Room ✓")
    t.eq("create_session: no session_joined besides session_created",
         a.quiet(0.3, type="session_joined"), [])
    # --llm-models: a client may pick only a model of the allow-list, or the configured one
    for model in ("other-model", "../etc", "m" * 128):
        e = bb.request({"type": "create_session", "model_id": model}, type="error")
        t.eq("create_session model_id %r not offered: invalid_field" % model[:20],
             (e.get("code"), e.get("request_type")), ("invalid_field", "create_session"))
        t.ok("create_session model_id not offered: the message names model_id and the flag",
             "'model_id'" in e.get("message", "") and "--llm-models" in e.get("message", ""),
             repr(e))
    ev = bb.request({"type": "create_session", "model_id": "none"}, type="session_created")
    t.eq("create_session with the configured model: model", ev.get("model"), "none")
    ev = bb.request({"type": "create_session", "model_id": "my-model"}, type="session_created")
    t.eq("create_session with model_id: model", ev.get("model"), "my-model")
    t.eq("create_session without title: title null", ev.get("title"), None)
    t.ok("create_session: a new id each time", ev.get("session_id") != sid, repr(ev))
    other = ev.get("session_id")

    # B joins A's session
    j = bb.join(sid)
    t.keys("join_session: exactly type, session_id, message_count, clients, members, reply_mode",
           j, {"type", "session_id", "message_count", "clients", "members", "reply_mode"})
    t.eq("join_session: members, the joiner included",
         sorted(j.get("members") or [], key=lambda m: m.get("connection_id")),
         sorted([{"connection_id": x.id, "name": "guest-" + x.id[:4]} for x in (a, bb)],
                key=lambda m: m["connection_id"]))
    t.eq("join_session: message_count 0, clients 2",
         (j.get("message_count"), j.get("clients")), (0, 2))
    uj = a.expect(type="session_update", update_type="user_joined")
    t.eq("user_joined to A: exact", uj, {"type": "session_update", "session_id": sid,
                                        "update_type": "user_joined", "connection_id": bb.id,
                                        "name": "guest-" + bb.id[:4], "clients": 2})
    # C joins: 3 clients
    j = c.join(sid)
    t.eq("third join: clients 3", j.get("clients"), 3)
    for x in (a, bb):
        uj = x.expect(type="session_update", update_type="user_joined")
        t.eq("user_joined C to %s: exact" % x.name, uj,
             {"type": "session_update", "session_id": sid, "update_type": "user_joined",
              "connection_id": c.id, "name": "guest-" + c.id[:4], "clients": 3})
    t.eq("the joiner gets no user_joined about itself",
         c.quiet(0.3, update_type="user_joined"), [])

    # A chats: everyone (sender included) gets the same message_added
    a.send({"type": "chat", "message": "hello everyone ✓"})
    evs = [x.expect(type="session_update", update_type="message_added") for x in (a, bb, c)]
    check_added(t, "chat from A", evs[0], sid, "hello everyone ✓", a.id, 1)
    t.ok("chat from A: B and C get exactly A's acknowledgement",
         strict_equal(evs[1], evs[0]) and strict_equal(evs[2], evs[0]), repr(evs))
    first_id = evs[0]["message"]["id"]
    # B chats with a client_msg_id
    bb.send({"type": "chat", "message": "hi A", "client_msg_id": "b-1"})
    evs = [x.expect(type="session_update", update_type="message_added") for x in (a, bb, c)]
    check_added(t, "chat from B with client_msg_id", evs[1], sid, "hi A", bb.id, 2, cmid="b-1")
    t.ok("chat from B: A and C get exactly B's acknowledgement",
         strict_equal(evs[0], evs[1]) and strict_equal(evs[2], evs[1]), repr(evs))
    t.ok("message ids increase", evs[1]["message"]["id"] > first_id, repr(evs[1]))
    t.eq("assistant none: no status, response_start, chunk or response_complete",
         [f for x in (a, bb, c) for f in x.quiet(0.0) if isinstance(f, dict) and f.get("type")
          in ("status", "response_start", "chunk", "response_complete")] + c.quiet(0.5, type=parley.one_of(
              "status", "response_start", "chunk", "response_complete")), [])
    code, lines = sql(b.db, "select id, role, content, connection_id, "
                      "coalesce(client_msg_id, '-') from messages where session_id = '%s' "
                      "order by id;" % sid)
    t.eq("database: both messages stored as acknowledged", lines,
         ["%d|user|hello everyone ✓|%s|-" % (first_id, a.id),
          "%d|user|hi A|%s|b-1" % (evs[1]["message"]["id"], bb.id)])

    # a late joiner with since=0 gets the whole history; since=first gets the rest
    d, _ = connect(t, b, "D")
    j = d.join(sid, since=0)
    t.keys("join with since: message list included", j,
           {"type", "session_id", "message_count", "clients", "members", "reply_mode", "messages",
            "has_more"})
    t.eq("join since=0: the whole replay fits: has_more false", j.get("has_more"), False)
    msgs = j.get("messages") or []
    t.eq("join since=0: replays both messages, ascending",
         [m.get("content") for m in msgs], ["hello everyone ✓", "hi A"])
    t.ok("join since=0: replayed messages equal the acknowledgements",
         len(msgs) == 2 and strict_equal(msgs[1], evs[1]["message"]), repr(msgs))
    t.eq("join since=0: message_count 2, clients 4", (j.get("message_count"), j.get("clients")),
         (2, 4))
    for x in (a, bb, c):
        x.expect(type="session_update", update_type="user_joined", connection_id=d.id)
    d.leave_ev = d.request({"type": "leave_session"}, type="session_left")
    for x in (a, bb, c):
        x.expect(type="session_update", update_type="user_left", connection_id=d.id, clients=3)
    d2 = d.request({"type": "join_session", "session_id": sid, "since": first_id},
                   type="session_joined")
    t.eq("join since=<first id>: only the later message", d2.get("messages"),
         [evs[1]["message"]])
    for x in (a, bb, c):
        x.expect(type="session_update", update_type="user_joined", connection_id=d.id,
                 clients=4)
    d.close()
    for x in (a, bb, c):
        x.expect(type="session_update", update_type="user_left", connection_id=d.id)

    # B leaves (current session): session_left to B, user_left to the others
    ev = bb.request({"type": "leave_session"}, type="session_left")
    t.eq("leave_session: exactly {type, session_id}", ev,
         {"type": "session_left", "session_id": sid})
    for x in (a, c):
        ul = x.expect(type="session_update", update_type="user_left")
        t.eq("user_left B to %s: exact" % x.name, ul,
             {"type": "session_update", "session_id": sid, "update_type": "user_left",
              "connection_id": bb.id, "name": "guest-" + bb.id[:4], "clients": 2})
    a.chat("after B left")
    c.expect(type="session_update", update_type="message_added")
    t.eq("a member that left no longer gets the session's messages",
         bb.quiet(0.5, type="session_update"), [])
    # B is still in its own session `other` (joined first); leaving made nothing current
    # in sid, and a chat naming sid is refused
    e = bb.request({"type": "chat", "message": "x", "session_id": sid}, type="error")
    t.eq("chat naming a session left: not_in_session", e.get("code"), "not_in_session")
    e = bb.request({"type": "leave_session", "session_id": sid}, type="error")
    t.eq("leave_session naming a session not joined: not_in_session", e.get("code"),
         "not_in_session")
    # B is still a member of `other`
    ack = bb.chat("in my own room", session_id=other)
    t.eq("a connection stays in its other session", ack.get("session_id"), other)

    # rejoin, then join again: the second join sends no second user_joined
    j = bb.join(sid)
    t.eq("rejoin: clients 3", j.get("clients"), 3)
    for x in (a, c):
        x.expect(type="session_update", update_type="user_joined", connection_id=bb.id,
                 clients=3)
    j = bb.join(other)
    t.eq("join of a session already in: session_joined, clients 1", j.get("clients"), 1)
    j = bb.join(sid)
    t.eq("join of a session already in (sid): clients still 3", j.get("clients"), 3)
    t.eq("join of a session already in: no second user_joined to the others",
         a.quiet(0.5, update_type="user_joined") + c.take_all(update_type="user_joined"), [])
    # session_id defaults to the one joined last (sid)
    ack = bb.chat("default session")
    t.eq("chat without session_id goes to the session joined last", ack.get("session_id"), sid)
    a.expect(type="session_update", update_type="message_added", session_id=sid)
    c.expect(type="session_update", update_type="message_added", session_id=sid)
    # A creates a second session: that becomes A's current one
    s2 = a.create_session()
    ack = a.chat("to the new one")
    t.eq("after create_session, chat without session_id goes to the created session",
         ack.get("session_id"), s2)
    ack = a.chat("back to the first", session_id=sid)
    t.eq("chat with session_id goes to that session", ack.get("session_id"), sid)
    t.eq("members of the first session got only the message meant for it",
         [m["message"]["content"] for m in c.quiet(0.5, update_type="message_added")],
         ["back to the first"])

    # C closes its connection: the others get user_left
    c.close()
    for x in (a, bb):
        ul = x.expect(type="session_update", update_type="user_left", connection_id=c.id)
        t.eq("closing the connection: user_left to %s with clients 2" % x.name,
             ul.get("clients"), 2)
    # dropping the TCP connection without a close frame: the same
    bb.abort()
    ul = a.expect(type="session_update", update_type="user_left", connection_id=bb.id)
    t.eq("dropped connection: user_left with clients 1", ul.get("clients"), 1)
    t.ok("A still works", a.ping_ok(), "no pong")
    a.close()


def test_typing(t, b):
    a, _ = connect(t, b, "A")
    bb, _ = connect(t, b, "B")
    c, _ = connect(t, b, "C")
    sid = a.create_session()
    bb.join(sid)
    c.join(sid)
    for x in (a, bb, c):
        x.clear()

    a.send({"type": "typing_start"})
    for x in (bb, c):
        ev = x.expect(type="session_update", update_type="user_typing")
        t.eq("typing_start: %s gets user_typing true" % x.name, ev,
             {"type": "session_update", "session_id": sid, "update_type": "user_typing",
              "connection_id": a.id, "name": "guest-" + a.id[:4], "typing": True})
    a.send({"type": "typing_stop"})
    for x in (bb, c):
        ev = x.expect(type="session_update", update_type="user_typing")
        t.eq("typing_stop: %s gets user_typing false" % x.name,
             (ev.get("connection_id"), ev.get("typing")), (a.id, False))
    t.eq("the typist never gets its own user_typing", a.quiet(0.3, update_type="user_typing"),
         [])

    # a chat clears the typist's indicator
    bb.send({"type": "typing_start"})
    ev = a.expect(type="session_update", update_type="user_typing")
    t.eq("B typing: A sees true", (ev.get("connection_id"), ev.get("typing")), (bb.id, True))
    c.expect(type="session_update", update_type="user_typing")
    bb.send({"type": "chat", "message": "done typing"})
    for x in (a, c):
        ev = x.expect(type="session_update", update_type="user_typing")
        t.eq("a chat clears the sender's typing: %s gets false" % x.name,
             (ev.get("connection_id"), ev.get("typing")), (bb.id, False))
        x.expect(type="session_update", update_type="message_added")
    bb.expect(type="session_update", update_type="message_added")

    # expiry: 10 s after the last typing_start; a repeated typing_start extends it and
    # sends nothing new
    a.send({"type": "typing_start"})
    bb.expect(type="session_update", update_type="user_typing", typing=True)
    c.expect(type="session_update", update_type="user_typing", typing=True)
    time.sleep(3)
    a.send({"type": "typing_start"})
    t0 = time.monotonic()
    ev = bb.expect(timeout=16, type="session_update", update_type="user_typing")
    dt = time.monotonic() - t0
    t.eq("typing expires by itself: typing false", (ev.get("connection_id"), ev.get("typing")),
         (a.id, False))
    t.ok("typing expires about 10 s after the last typing_start (9-13 s)", 9 <= dt <= 13,
         "after %.1f s" % dt)
    ev = c.expect(timeout=3, type="session_update", update_type="user_typing")
    t.eq("expiry reaches C too", ev.get("typing"), False)
    t.eq("a repeated typing_start sent no second typing true",
         bb.take_all(update_type="user_typing") + c.take_all(update_type="user_typing"), [])

    # closing while typing: the others learn it stopped (typing false and/or user_left)
    c.send({"type": "typing_start"})
    a.expect(type="session_update", update_type="user_typing", typing=True)
    c.close()
    ul = a.expect(type="session_update", update_type="user_left", connection_id=c.id)
    t.eq("typist closed: user_left clients 2", ul.get("clients"), 2)
    stale = [e for e in a.quiet(0.5, update_type="user_typing") if e.get("typing")]
    t.eq("typist closed: no typing true afterwards", stale, [])
    a.close()
    bb.close()


def test_fanout(t, b):
    """Twelve members chatting at once: each gets every message exactly once, and all
    see the same order (the order of the ids)."""
    clients = [connect(t, b, "M%d" % i)[0] for i in range(12)]
    sid = clients[0].create_session()
    for c in clients[1:]:
        c.join(sid)
    time.sleep(0.3)
    for c in clients:
        c.clear()
    for r in range(4):
        for i, c in enumerate(clients):
            c.send({"type": "chat", "message": "m%d from %d" % (r, i)})
    seen = []
    for c in clients:
        got = []
        try:
            for _ in range(48):
                got.append(c.expect(timeout=10, type="session_update",
                                    update_type="message_added"))
        except parley.ExpectError as e:
            t.fail("fanout: %s gets 48 message_added" % c.name, str(e)[:300])
        seen.append(got)
    ids = [[e["message"]["id"] for e in g] for g in seen]
    t.ok("fanout: every member gets all 48 messages once, in id order",
         all(x == sorted(set(ids[0])) and len(x) == 48 for x in ids),
         "lengths %r" % [len(x) for x in ids])
    counts = {tuple(e.get("message_count") for e in g) for g in seen}
    t.eq("fanout: everyone sees message_count run 1..48", counts, {tuple(range(1, 49))})
    code, lines = sql(b.db, "select count(*) from messages where session_id = '%s';" % sid)
    t.eq("fanout: 48 rows stored", lines, ["48"])
    for c in clients:
        c.close()


def test_sigterm(t):
    b = Broker(t, llm="none", name="broker-sigterm")
    a, _ = connect(t, b, "A")
    bb, _ = connect(t, b, "B")
    sid = a.create_session()
    bb.join(sid)
    a.chat("before shutdown")
    b.stop()  # reports exit 0
    for x in (a, bb):
        t.eq("SIGTERM: %s gets close 1001" % x.name, x.wait_closed(5), 1001)
    code, lines = sql(b.db, "select content from messages where session_id = '%s';" % sid)
    t.eq("SIGTERM: the acknowledged message is in the database", lines, ["before shutdown"])


def main(t):
    b = Broker(t, llm="none", flags={"--llm-models": "my-model"})
    with t.section("connect"):
        test_connect(t, b)
    with t.section("sessions"):
        test_sessions(t, b)
    with t.section("typing"):
        test_typing(t, b)
    with t.section("fanout"):
        test_fanout(t, b)
    parley.close_clients()
    b.stop()
    with t.section("sigterm"):
        test_sigterm(t)


parley.run(main)
