"""The reply policy of SPEC 9: a session's reply_mode (always, the default; mention; off),
set by create_session and POST /sessions/new, shown in every session object, changed with
PATCH /sessions/{id} {reply_mode?, title?} (parley-rest and parley-fcgi); members hear
session_update session_changed with the new reply_mode and title; the broker answers a chat
by the mode as committed: mention only for @assistant or @ + the model's name at a word
boundary (the echo assistant's model is `echo`); a chat not answered is stored, broadcast
and queues no reply, and the next reply's context still holds it; with two brokers over
Redis the change reaches the members on both."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from deploy import Fcgi  # noqa: E402
from parley import Broker, Rest, check_error, check_reply, one_of, sql  # noqa: E402
from redis import REDIS_SERVER, RedisServer  # noqa: E402

WAIT = 15.0  # seconds for something that should come at once (ASan, 2 shared cores)
SILENCE = 2.0  # seconds of quiet that say "no reply was started"
REPLY_TYPES = one_of("status", "response_start", "chunk", "response_complete")
SESSION_KEYS = {"session_id", "title", "model", "reply_mode", "message_count", "clients",
                "created_at", "updated_at"}


def connect(b, name):
    c = b.client(name, timeout=WAIT)
    c.id = c.expect(timeout=WAIT, type="connected").get("connection_id")
    return c


def answered(t, name, c, sid, text):
    """c's chat text is acknowledged and answered (the echo: the text itself)."""
    c.chat(text, timeout=WAIT)
    frames = c.read_reply(sid, timeout=3 * WAIT)
    return frames, check_reply(t, name, frames, sid, text=text)


def not_answered(t, name, c, sid, text, others=()):
    """c's chat text is acknowledged (and reaches others) but starts no reply."""
    ack = c.chat(text, timeout=WAIT)
    t.eq("%s: stored and acknowledged" % name,
         (ack.get("session_id"), ack["message"].get("role"), ack["message"].get("content")),
         (sid, "user", text))
    for o in others:
        ev = o.expect(timeout=WAIT, type="session_update", update_type="message_added",
                      pred=lambda m: m["message"].get("content") == text)
        t.eq("%s: broadcast to the other member" % name, ev["message"].get("id"),
             ack["message"].get("id"))
    t.eq("%s: no reply is started" % name, c.quiet(SILENCE, type=REPLY_TYPES), [])
    return ack


def queued(db, message_id):
    code, lines = sql(db, "SELECT count(*) FROM reply_queue WHERE message_id = %d"
                      % message_id)
    return lines if code == 0 else ("error", lines)


def changed(sid, mode, title):
    return {"type": "session_update", "session_id": sid, "update_type": "session_changed",
            "reply_mode": mode, "title": title}


def test_create(t, rest, b):
    t.section("create with each mode")
    a = connect(b, "A")
    for mode in ("always", "mention", "off"):
        ev = a.request({"type": "create_session", "reply_mode": mode}, timeout=WAIT,
                       type="session_created")
        t.eq("create_session reply_mode %s: session_created exactly" % mode,
             {k: v for k, v in ev.items() if k != "session_id"},
             {"type": "session_created", "model": "echo", "title": None, "reply_mode": mode})
        r = rest.get("/sessions/%s" % ev["session_id"])
        t.eq("... GET /sessions/{id} says reply_mode %s" % mode,
             (r.status, r.body.get("reply_mode")), (200, mode))
    ev = a.request({"type": "create_session", "title": "plain"}, timeout=WAIT,
                   type="session_created")
    t.eq("create_session without reply_mode: always",
         (ev.get("reply_mode"), ev.get("title")), ("always", "plain"))
    for mode in ("always", "mention", "off"):
        r = rest.post("/sessions/new", {"title": "rest " + mode, "reply_mode": mode})
        t.eq("POST /sessions/new reply_mode %s: 201 with it" % mode,
             (r.status, sorted(r.body), r.body.get("reply_mode"), r.body.get("title")),
             (201, ["created_at", "model", "reply_mode", "session_id", "title"], mode,
              "rest " + mode))
        sid = r.body.get("session_id")
        r = rest.get("/sessions/%s" % sid)
        t.eq("... GET /sessions/{id}: reply_mode %s among the session's fields" % mode,
             (r.body.get("reply_mode"), SESSION_KEYS <= set(r.body)), (mode, True))
        joined = a.join(sid, timeout=WAIT)
        t.eq("... session_joined carries reply_mode %s" % mode, joined.get("reply_mode"), mode)
        a.send({"type": "leave_session", "session_id": sid})
        a.expect(timeout=WAIT, type="session_left")
        listed = [s for s in rest.get("/sessions?limit=500").body.get("sessions", [])
                  if s.get("session_id") == sid]
        t.eq("... GET /sessions lists it with reply_mode %s" % mode,
             [(s.get("reply_mode"), set(s) == SESSION_KEYS) for s in listed], [(mode, True)])
    r = rest.post("/sessions/new", {})
    t.eq("POST /sessions/new without reply_mode: always", (r.status, r.body.get("reply_mode")),
         (201, "always"))

    t.section("bad modes are refused")
    for bad, why in (("sometimes", "an unknown word"), ("ALWAYS", "another case"),
                     ("", "empty"), (5, "a number"), (["off"], "a list"),
                     ("mentions-only", "too long")):
        a.send({"type": "create_session", "reply_mode": bad})
        ev = a.expect(timeout=WAIT, type="error")
        t.eq("create_session reply_mode %s: error invalid_field for create_session" % why,
             (ev.get("code"), ev.get("request_type")), ("invalid_field", "create_session"))
        t.ok("... naming reply_mode", "reply_mode" in (ev.get("message") or ""), repr(ev))
        check_error(t, "POST /sessions/new reply_mode %s" % why,
                    rest.post("/sessions/new", {"reply_mode": bad}), 400, "invalid_field",
                    mentions="reply_mode")
    t.eq("nothing was created by the refusals", a.quiet(0.5, type="session_created"), [])
    a.close()


def test_mention(t, rest, b):
    t.section("mention")
    a, o = connect(b, "A"), connect(b, "O")
    sid = rest.new_session(reply_mode="mention")
    a.join(sid, timeout=WAIT)
    o.join(sid, timeout=WAIT)
    frames, done = answered(t, "mention: '@Assistant, hello' is answered", a, sid,
                            "@Assistant, hello")
    t.eq("... the other member watches the reply too",
         [f["type"] for f in o.read_reply(sid, timeout=3 * WAIT)][-1], "response_complete")
    t.eq("... its context is the one message", frames[0].get("context_messages"), 1)
    skipped = []
    for text in ("email@assistant.com", "@assistants please", "hi assistant", "@echoes"):
        ack = not_answered(t, "mention: %r is not answered" % text, a, sid, text, others=(o,))
        skipped.append(ack["message"]["id"])
        t.eq("... and queues no reply (no reply_queue row)", queued(b.db, ack["message"]["id"]),
             ["0"])
    o.clear()
    frames, done = answered(t, "mention: '@echo' (the model's name) is answered", a, sid,
                            "@echo, your turn")
    # the context: the first exchange (2), the 4 chats not answered, and this one
    t.eq("... its context holds what was said since, answered or not",
         frames[0].get("context_messages"), 7)
    frames, _ = answered(t, "mention: 'hi @ASSISTANT' at the end is answered", a, sid,
                         "hi @ASSISTANT")
    a.close()
    o.close()


def test_off(t, rest, b):
    t.section("off")
    a = connect(b, "A")
    sid = a.create_session(reply_mode="off", timeout=WAIT)
    for text in ("hello", "@assistant are you there?", "@echo"):
        ack = not_answered(t, "off: %r is not answered" % text, a, sid, text)
        t.eq("... no reply_queue row", queued(b.db, ack["message"]["id"]), ["0"])
    r = rest.get("/sessions/%s" % sid)
    t.eq("off: every chat is stored", [m.get("content") for m in r.body.get("messages", [])],
         ["hello", "@assistant are you there?", "@echo"])
    a.close()


def test_patch(t, rest, b, front, where):
    t.section("PATCH /sessions/{id} through %s" % where)
    a, o = connect(b, "A"), connect(b, "O")
    sid = rest.new_session(title="Room")
    a.join(sid, timeout=WAIT)
    o.join(sid, timeout=WAIT)
    before = rest.get("/sessions/%s" % sid).body

    def patch(body, mode, title, name):
        r = front.request("PATCH", "/sessions/%s" % sid, body=body)
        t.eq("%s: 200" % name, r.status, 200)
        got = r.body if isinstance(r.body, dict) else {}
        t.eq("%s: answers the session with reply_mode and title" % name,
             (set(got) >= SESSION_KEYS, got.get("session_id"), got.get("reply_mode"),
              got.get("title"), got.get("model"), got.get("created_at")),
             (True, sid, mode, title, "echo", before.get("created_at")))
        for c, who in ((a, "a member"), (o, "the other member")):
            ev = c.expect(timeout=WAIT, type="session_update", update_type="session_changed")
            t.eq("%s: %s gets session_changed exactly" % (name, who), ev,
                 changed(sid, mode, title))
        return got

    got = patch({"reply_mode": "off", "title": "Quiet room"}, "off", "Quiet room",
                "PATCH reply_mode off and a title")
    t.ok("... updated_at moves on", got.get("updated_at", "") >= before.get("updated_at"),
         repr((got.get("updated_at"), before.get("updated_at"))))
    r = rest.get("/sessions/%s" % sid)
    t.eq("... GET /sessions/{id} shows both", (r.body.get("reply_mode"), r.body.get("title")),
         ("off", "Quiet room"))
    not_answered(t, "after PATCH off: the next chat", a, sid, "@assistant still there?",
                 others=(o,))
    patch({"reply_mode": "mention"}, "mention", "Quiet room", "PATCH reply_mode alone")
    not_answered(t, "after PATCH mention: a chat without a mention", a, sid, "just us",
                 others=(o,))
    o.clear()
    answered(t, "after PATCH mention: '@assistant' is answered", a, sid, "@assistant now")
    patch({"title": "Renamed"}, "mention", "Renamed", "PATCH title alone (mode kept)")
    patch({"title": None}, "mention", None, "PATCH title null (no title)")
    patch({"reply_mode": "always", "title": ""}, "always", "", "PATCH back to always")
    answered(t, "after PATCH always: any chat is answered", a, sid, "plain words")
    o.clear()

    t.section("PATCH refusals (%s)" % where)
    url = "/sessions/%s" % sid
    for body, mentions, name in (
            ({}, "reply_mode", "an empty object"),
            ({"reply_mode": "never"}, "reply_mode", "an unknown mode"),
            ({"reply_mode": None}, "reply_mode", "reply_mode null"),
            ({"reply_mode": 1}, "reply_mode", "reply_mode a number"),
            ({"title": 5}, "title", "title a number"),
            ({"title": "x" * 201}, "title", "a title of 201 characters"),
            ({"reply_mode": "off", "colour": "red"}, "colour", "an unknown field")):
        check_error(t, "PATCH %s" % name, front.request("PATCH", url, body=body), 400,
                    "invalid_field", mentions=mentions)
    check_error(t, "PATCH with a body that is not JSON",
                front.request("PATCH", url, raw="{nope"), 400, "bad_request")
    check_error(t, "PATCH with a JSON array", front.request("PATCH", url, raw="[1]"), 400,
                "bad_request")
    check_error(t, "PATCH an unknown session",
                front.request("PATCH", "/sessions/0000000000000000", body={"reply_mode": "off"}),
                404, "session_not_found")
    check_error(t, "PATCH a malformed id",
                front.request("PATCH", "/sessions/zz", body={"reply_mode": "off"}), 404,
                "session_not_found")
    r = front.request("PUT", url, body={"reply_mode": "off"})
    check_error(t, "PUT /sessions/{id}", r, 405, "method_not_allowed")
    t.eq("... Allow names GET, PATCH and DELETE", r.headers.get("allow"), "GET, PATCH, DELETE")
    r = front.request("PATCH", "/sessions", body={"reply_mode": "off"})
    check_error(t, "PATCH /sessions (the list)", r, 405, "method_not_allowed")
    t.eq("nothing was changed by the refusals",
         (rest.get(url).body.get("reply_mode"), rest.get(url).body.get("title")), ("always", ""))
    t.eq("... and no member heard of a change",
         a.quiet(0.5, type="session_update", update_type="session_changed"), [])
    a.close()
    o.close()


def test_two_brokers(t):
    t.section("two brokers over Redis")
    if not os.access(REDIS_SERVER, os.X_OK):
        t.skip("two brokers over Redis", "redis-server is not installed (make deps)")
        return
    tmpdir = parley.make_tmpdir()
    redis = RedisServer(tmpdir=tmpdir).start()
    try:
        rest = Rest(t, tmpdir=tmpdir, flags={"--redis": redis.url})
        brokers = [Broker(t, tmpdir=tmpdir, name="broker-" + node,
                          flags={"--db": rest.db, "--redis": redis.url, "--node-id": node,
                                 "--notify-socket": os.path.join(tmpdir, node + ".sock")})
                   for node in ("b1", "b2")]
        a, c = connect(brokers[0], "A@b1"), connect(brokers[1], "C@b2")
        sid = rest.new_session(title="relay")
        a.join(sid, timeout=WAIT)
        c.join(sid, timeout=WAIT)
        r = rest.request("PATCH", "/sessions/%s" % sid, body={"reply_mode": "off"})
        t.eq("PATCH through REST with --redis: 200", (r.status, r.body.get("reply_mode")),
             (200, "off"))
        for x, where in ((a, "b1"), (c, "b2")):
            ev = x.expect(timeout=WAIT, type="session_update", update_type="session_changed")
            t.eq("session_changed reaches the member on %s" % where, ev,
                 changed(sid, "off", "relay"))
        ack = c.chat("@assistant anyone?", timeout=WAIT)
        a.expect(timeout=WAIT, type="session_update", update_type="message_added")
        t.eq("off on b2: no reply on either broker",
             (c.quiet(SILENCE, type=REPLY_TYPES), a.quiet(0.1, type=REPLY_TYPES)), ([], []))
        t.eq("... and no reply_queue row", queued(rest.db, ack["message"]["id"]), ["0"])
        r = rest.request("PATCH", "/sessions/%s" % sid, body={"reply_mode": "mention"})
        for x, where in ((a, "b1"), (c, "b2")):
            ev = x.expect(timeout=WAIT, type="session_update", update_type="session_changed")
            t.eq("the second change reaches %s" % where, ev.get("reply_mode"), "mention")
        c.chat("@assistant now?", timeout=WAIT)
        a.expect(timeout=WAIT, type="session_update", update_type="message_added")
        for x, where in ((c, "b2"), (a, "b1")):
            frames = x.read_reply(sid, timeout=3 * WAIT)
            t.eq("mention on b2: the reply streams to the member on %s" % where,
                 "".join(f.get("text", "") for f in frames if f["type"] == "chunk"),
                 "@assistant now?")
        parley.close_clients()
        for b in brokers:
            b.stop()
        rest.stop()
    finally:
        redis.destroy()


def main(t):
    rest = Rest(t)
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port)
    test_create(t, rest, b)
    test_mention(t, rest, b)
    test_off(t, rest, b)
    test_patch(t, rest, b, rest, "parley-rest")
    f = Fcgi(t, tmpdir=rest.tmpdir, ws_port=rest.ws_port, flags={"--db": rest.db})
    test_patch(t, rest, b, f, "parley-fcgi")
    f.stop()
    parley.close_clients()
    b.stop()
    rest.stop()
    test_two_brokers(t)


parley.run(main)
