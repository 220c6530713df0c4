"""The JSON Schemas of the wire protocol (schema/ws/*.json) against the running broker: every
server message seen during a representative flat + envelope session (every kind, including
each session_update kind, replay and streaming joins, errors) validates against the
server schema of its receiver's dialect, and every client message sent validates against
the client schema. Also: the schemas themselves are draft 2020-12 and reject bad messages."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
import schema_check  # noqa: E402
from parley import Broker, Rest  # noqa: E402

FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}
SCHEMAS = {n: schema_check.load(n + ".json") for n in
           ("flat-server", "flat-client", "envelope-server", "envelope-client")}
SENT = []  # (dialect, message)
ENV_KEYS = {"type", "timestamp", "client_id", "channel", "data"}
CLIENTS = []  # (dialect, WsClient)


def connect(b, name, dialect, query=""):
    """query "?dialect=envelope" (or a /ws/{client_id} path): the greeting is an envelope."""
    c = parley.WsClient(b.url + query, name=name)
    g = c.expect(type="connected")
    c.id = g.get("connection_id") or g.get("data", {}).get("connection_id")
    c.dialect = dialect
    c.greeting = dialect if query else "flat"
    CLIENTS.append(c)
    return c


def send(c, msg):
    SENT.append((c.dialect, msg))
    c.send(msg)


def env(type_, data=None, channel=None):
    return {"type": type_, "timestamp": "2026-01-20T12:34:56.789Z", "client_id": "me",
            "channel": channel, "data": {} if data is None else data}


def kind(dialect, m):
    if dialect == "flat" and m.get("type") == "session_update":
        return "session_update/%s" % m.get("update_type")
    return m.get("type")


def scenario(t, b, r):
    a = connect(b, "A", "flat")
    bb = connect(b, "B", "flat")
    send(a, {"type": "create_session", "title": "schemas", "reply_mode": "always"})
    sid = a.expect(type="session_created")["session_id"]
    send(bb, {"type": "join_session", "session_id": sid})
    bb.expect(type="session_joined")
    send(a, {"type": "typing_start"})
    bb.expect(type="session_update", update_type="user_typing")
    send(a, {"type": "typing_stop", "session_id": sid})
    bb.expect(type="session_update", update_type="user_typing")
    send(a, {"type": "chat", "message": "hello schema world", "client_msg_id": "m1"})
    a.read_reply(sid)
    # a long reply: a joiner gets `streaming`, and stop ends it
    send(a, {"type": "chat", "message": " ".join("w%d" % i for i in range(60))})
    a.expect(type="chunk")
    c = connect(b, "C", "flat")
    send(c, {"type": "join_session", "session_id": sid, "since": 0})
    j = c.expect(type="session_joined")
    t.ok("join while streaming: session_joined has messages and streaming",
         "messages" in j and "streaming" in j, repr(j)[:300])
    send(a, {"type": "stop"})
    a.expect(type="response_complete", timeout=10)
    send(c, {"type": "leave_session", "session_id": sid})
    c.expect(type="session_left")
    send(c, {"type": "ping"})
    c.expect(type="pong")
    for bad in ({"type": "bogus"}, {"type": "chat"}, {"type": "join_session",
                                                       "session_id": "0123456789abcdef"}):
        c.send(bad)  # deliberately not valid client messages: not recorded as SENT
        c.expect(type="error")

    # envelope clients in a channel, with a flat member
    e = connect(b, "E", "envelope")
    send(e, env("auth", {}))
    e.expect(type="auth_success")
    for q in ("?dialect=envelope", "/seed-client"):  # chosen at the upgrade (SPEC 3)
        u = connect(b, "U", "envelope", q)
        send(u, env("ping"))
        u.expect(type="pong")
    send(e, env("subscribe", {"channel": "schema-room"}))
    csid = e.expect(type="subscription_success").get("data", {}).get("session_id")
    f = connect(b, "F", "flat")
    send(f, {"type": "join_session", "session_id": csid})
    f.expect(type="session_joined")
    send(f, {"type": "typing_start"})
    e.expect(type="user_typing")
    send(f, {"type": "chat", "message": "flat in a channel"})
    e.expect(type="response_complete", timeout=10)
    send(e, env("chat_message", {"content": "env chat", "thread_id": "t1"}, "schema-room"))
    f.expect(type="session_update", update_type="message_added",
             pred=lambda m: m["message"]["content"] == "env chat")
    send(e, env("task_update", {"task_id": "t-1", "status": "done"}, "schema-room"))
    e.expect(type="task_update")
    send(e, env("agent_status", {"agent_id": "ag", "status": "idle"}, None))
    e.expect(type="agent_status")
    send(e, env("llm_request", {"content": "answer me", "metadata": {"m": 1}}, "schema-room"))
    e.expect(type="response_complete", timeout=10)
    send(e, env("ping"))
    e.expect(type="pong")
    e.send(env("bogus"))
    e.expect(type="error")
    send(e, env("subscribe", {"channel": "second-room"}))
    e.expect(type="subscription_success", pred=lambda m: m.get("channel") == "second-room")
    send(e, env("unsubscribe", {"channel": "second-room"}))
    e.expect(type="unsubscription_success")
    # a PATCH (SPEC 9), then REST clear and delete, reach both dialects
    t.eq("REST PATCH of the channel's session: 200",
         r.request("PATCH", "/sessions/%s" % csid,
                   body={"reply_mode": "mention", "title": "renamed"}).status, 200)
    e.expect(type="session_changed")
    f.expect(type="session_update", update_type="session_changed")
    t.eq("REST clear of the channel's session: 200",
         r.post("/sessions/%s/clear" % csid).status, 200)
    e.expect(type="history_cleared")
    f.expect(type="session_update", update_type="history_cleared")
    send(f, {"type": "leave_session"})
    e.expect(type="user_left")
    send(f, {"type": "join_session", "session_id": csid})
    f.expect(type="session_joined")  # joined before the delete below, not racing it
    e.expect(type="user_joined")
    t.eq("REST delete of the channel's session: 200", r.delete("/sessions/%s" % csid).status, 200)
    e.expect(type="session_deleted")
    f.expect(type="session_update", update_type="session_deleted")
    # flat session deleted with members: session_deleted to flat; user_left on close
    send(bb, {"type": "ping"})
    bb.expect(type="pong")
    bb.close()
    a.expect(type="session_update", update_type="user_left")
    t.eq("REST clear of the flat session: 200", r.post("/sessions/%s/clear" % sid).status, 200)
    a.expect(type="session_update", update_type="history_cleared")
    t.eq("REST delete of the flat session: 200", r.delete("/sessions/%s" % sid).status, 200)
    a.expect(type="session_update", update_type="session_deleted")
    time.sleep(0.3)


def main(t):
    for n, s in SCHEMAS.items():
        t.eq("%s.json: draft 2020-12" % n, s.get("$schema"),
             "https://json-schema.org/draft/2020-12/schema")
        t.ok("%s.json: a oneOf over message types" % n, isinstance(s.get("oneOf"), list) and
             len(s["oneOf"]) >= 8, repr(s.get("oneOf"))[:200])
    # the schemas reject what they should
    fs, es = SCHEMAS["flat-server"], SCHEMAS["envelope-server"]
    for name, inst, schema in (
            ("flat chunk without is_final", {"type": "chunk", "session_id": "0" * 16,
                                             "response_id": "0" * 16, "text": "x",
                                             "chunk_number": 1}, fs),
            ("flat pong with a bad timestamp", {"type": "pong", "timestamp": "yesterday"}, fs),
            ("flat unknown type", {"type": "nope"}, fs),
            ("flat error with an unknown code", {"type": "error", "code": "oops",
                                                 "message": "m"}, fs),
            ("envelope pong without data", {"type": "pong", "timestamp":
                                            "2026-01-01T00:00:00.000Z", "client_id": None,
                                            "channel": None}, es),
            ("envelope llm_chunk with is_final a string", {
                "type": "llm_chunk", "timestamp": "2026-01-01T00:00:00.000Z", "client_id": None,
                "channel": "c", "data": {"chunk": "", "is_final": "yes", "response_id": "0" * 16,
                                         "chunk_number": 1, "session_id": "0" * 16}}, es),
            ("envelope pong with client_id null", {
                "type": "pong", "timestamp": "2026-01-01T00:00:00.000Z", "client_id": None,
                "channel": None, "data": {"timestamp": "2026-01-01T00:00:00.000Z"}}, es),
            ("envelope connected with a flat body", {
                "type": "connected", "timestamp": "2026-01-01T00:00:00.000Z",
                "client_id": "x", "channel": None, "connection_id": "0" * 12, "data": {}}, es),
            ("flat client chat without message", {"type": "chat"}, SCHEMAS["flat-client"]),
            ("envelope client subscribe with a bad channel",
             env("subscribe", {"channel": "a b"}), SCHEMAS["envelope-client"])):
        t.ok("schema rejects: %s" % name, schema_check.validate(inst, schema) != [],
             "accepted %r" % (inst,))
    # issue 16: every envelope server message has a string client_id, a timestamp, a
    # channel (string or null) and a data object
    for k, d in sorted(es["$defs"].items()):
        if "client_id" not in d.get("properties", {}):
            continue
        t.eq("envelope-server %s: requires type, timestamp, client_id, channel, data" % k,
             sorted(x for x in d.get("required", []) if x in ENV_KEYS), sorted(ENV_KEYS))
        t.eq("envelope-server %s: client_id a string" % k,
             d["properties"]["client_id"].get("type"), "string")
    r = Rest(t)
    b = Broker(t, tmpdir=r.tmpdir, port=r.ws_port, flags=FLAGS)
    with t.section("scenario"):
        scenario(t, b, r)
    parley.close_clients()
    seen = {"flat": {}, "envelope": {}}
    for c in CLIENTS:
        for i, m in enumerate(c.received):
            d = c.dialect if i > 0 else c.greeting  # flat unless the upgrade chose
            if not isinstance(m, dict):
                t.fail("%s frame %d is a JSON object" % (c.name, i), repr(m)[:200])
                continue
            k = kind(d, m)
            seen[d].setdefault(k, []).append(m)
    for d in ("flat", "envelope"):
        schema = SCHEMAS[d + "-server"]
        for k, msgs in sorted(seen[d].items()):
            bad = [(m, schema_check.validate(m, schema)) for m in msgs]
            bad = [x for x in bad if x[1]]
            t.ok("%s server %s: all %d validate" % (d, k, len(msgs)), not bad,
                 "%d invalid; first %r: %s" % (len(bad), bad[0][0], bad[0][1][:3]) if bad
                 else "")
    want = {"flat": ["connected", "session_created", "session_joined", "session_left", "status",
                     "response_start", "chunk", "response_complete",
                     "session_update/message_added", "session_update/user_typing",
                     "session_update/user_joined", "session_update/user_left",
                     "session_update/history_cleared", "session_update/session_deleted",
                     "session_update/session_changed", "pong", "error"],
            "envelope": ["connected", "auth_success", "subscription_success", "unsubscription_success",
                         "chat_message", "task_update", "agent_status", "llm_chunk", "pong",
                         "error", "status", "response_start", "response_complete",
                         "user_joined", "user_left", "user_typing", "history_cleared",
                         "session_deleted", "session_changed"]}
    for d, kinds in want.items():
        t.eq("every %s server message kind was seen" % d,
             sorted(k for k in kinds if k not in seen[d]), [])
    for d in ("flat", "envelope"):
        schema = SCHEMAS[d + "-client"]
        msgs = [m for dd, m in SENT if dd == d]
        bad = [(m, schema_check.validate(m, schema)) for m in msgs]
        bad = [x for x in bad if x[1]]
        t.ok("every %s client message sent (%d) validates against %s-client.json"
             % (d, len(msgs), d), msgs and not bad, repr(bad[:2]))
    b.stop()
    r.stop()


parley.run(main)
