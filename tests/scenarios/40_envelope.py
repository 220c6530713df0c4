"""Envelope dialect (SPEC 3.3, docs/envelope-decisions.md): envelope and flat clients in one
session (each sees the other's messages and the assistant's reply, in its own dialect);
every envelope message type and its answer (auth, subscribe/unsubscribe/resubscribe,
chat_message with thread_id, task_update/agent_status to a channel and with a null
channel to every connection, llm_request streamed as llm_chunk, templates, ping, unknown
types, missing fields); the framing of every server message; channel-name validation;
a channel's session seen through REST GET /sessions with its channel name."""

import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import SESSION_ID_RE, TS_RE, Broker, Rest, echo_chunks, one_of  # noqa: E402

ENV_KEYS = {"type", "timestamp", "client_id", "channel", "data"}
ME = "test"  # the client_id every envelope message of this test carries (SPEC 3.3)
ERROR_CLIENT_IDS = []  # (case, client_id got, receiver's id): checked once at the end
REPLY_TYPES = one_of("status", "response_start", "llm_chunk", "response_complete")
FLAT_REPLY = one_of("status", "response_start", "chunk", "response_complete")


FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def env(type_, data=None, channel=None):
    return {"type": type_, "timestamp": "2026-01-20T12:34:56.789Z", "client_id": "test",
            "channel": channel, "data": {} if data is None else data}


def check_env(t, name, m, type_, client_id="-", channel="-"):
    """m is an envelope server message: exactly type, timestamp (ISO UTC ms), client_id,
    channel, data (object). client_id / channel checked when given ("-": not checked)."""
    t.keys("%s: envelope keys exactly type, timestamp, client_id, channel, data" % name, m,
           ENV_KEYS)
    t.eq("%s: type" % name, m.get("type"), type_)
    t.match("%s: timestamp ISO-8601 UTC" % name, m.get("timestamp"), TS_RE)
    t.ok("%s: data is an object" % name, isinstance(m.get("data"), dict), repr(m))
    t.ok("%s: channel is a string or null" % name,
         m.get("channel") is None or isinstance(m.get("channel"), str), repr(m))
    if client_id != "-":
        t.eq("%s: client_id" % name, m.get("client_id"), client_id)
    if channel != "-":
        t.eq("%s: channel" % name, m.get("channel"), channel)


def env_client(b, name):
    """A connection that speaks envelope (its first message is auth with a data object)."""
    c = connect(b, name)
    c.send(env("auth", {}))
    c.expect(type="auth_success")
    return c


def subscribe(c, channel):
    c.send(env("subscribe", {"channel": channel}))
    return c.expect(type="subscription_success", pred=lambda m: m.get("channel") == channel)


def read_env_reply(c, timeout=20.0):
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        f = c.expect(timeout=max(0.0, deadline - time.monotonic()), type=REPLY_TYPES)
        frames.append(f)
        if f["type"] == "response_complete":
            return frames


def read_flat_reply(c, sid, timeout=20.0):
    return c.read_reply(sid, timeout=timeout)


def check_env_reply(t, name, frames, sid, text, channel, me=ME):
    """status, response_start, llm_chunk 1..n (word + whitespace), a final empty llm_chunk
    is_final true, response_complete; all enveloped with the requester's client_id (me)."""
    types = [f.get("type") for f in frames]
    t.ok("%s: status, response_start, llm_chunks, response_complete" % name,
         len(types) >= 4 and types[0] == "status" and types[1] == "response_start" and
         all(x == "llm_chunk" for x in types[2:-1]) and types[-1] == "response_complete",
         repr(types))
    for f in frames:
        check_env(t, "%s: %s framing" % (name, f.get("type")), f, f.get("type"), me, channel)
    if len(frames) < 4:
        return None
    rid = frames[1].get("data", {}).get("response_id")
    t.match("%s: response_id 16 hex" % name, rid, r"^[0-9a-f]{16}$")
    t.eq("%s: status data" % name, set(frames[0]["data"]),
         {"session_id", "message", "context_messages"})
    t.eq("%s: response_start data" % name, frames[1]["data"],
         {"session_id": sid, "response_id": rid})
    chunks = [f["data"] for f in frames[2:-1]]
    bad = [c for c in chunks if set(c) != {"chunk", "is_final", "response_id", "chunk_number",
                                           "session_id"}]
    t.ok("%s: llm_chunk data exactly chunk, is_final, response_id, chunk_number, session_id"
         % name, not bad, repr(bad[:2]))
    t.ok("%s: every chunk names the session and the response" % name,
         all(c.get("session_id") == sid and c.get("response_id") == rid for c in chunks),
         repr(chunks[:2]))
    t.eq("%s: chunk_number 1..n" % name, [c.get("chunk_number") for c in chunks],
         list(range(1, len(chunks) + 1)))
    t.eq("%s: only the last chunk is_final" % name, [c.get("is_final") for c in chunks],
         [False] * (len(chunks) - 1) + [True])
    t.eq("%s: the final chunk is empty" % name, chunks[-1].get("chunk") if chunks else None, "")
    texts = [c.get("chunk") for c in chunks[:-1]]
    t.eq("%s: chunks are word + following whitespace" % name, texts, echo_chunks(text))
    t.eq("%s: chunks concatenate to the content exactly" % name, "".join(texts), text)
    done = frames[-1]["data"]
    t.keys("%s: response_complete data" % name, done,
           {"session_id", "response_id", "message_id", "total_chunks", "processing_time",
            "message_count", "stopped"})
    t.eq("%s: response_complete total_chunks" % name, done.get("total_chunks"), len(chunks))
    t.eq("%s: response_complete stopped false" % name, done.get("stopped"), False)
    t.eq("%s: response_complete names the session and response" % name,
         (done.get("session_id"), done.get("response_id")), (sid, rid))
    return done


# ------------------------------------------------------------------ mixed session

def test_mixed(t, b, r):
    e = env_client(b, "E")
    f = connect(b, "F")
    sub = subscribe(e, "mixed-room")
    check_env(t, "subscription_success", sub, "subscription_success", ME, "mixed-room")
    sid = sub["data"].get("session_id")
    t.match("subscription_success: data.session_id 16 hex", sid, SESSION_ID_RE)
    t.eq("subscription_success: data", sub.get("data"),
         {"channel": "mixed-room", "session_id": sid, "message_count": 0, "clients": 1,
          "members": [{"connection_id": e.id, "name": "test"}]})

    j = f.join(sid)
    t.eq("flat join_session of the channel's session: clients 2",
         (j.get("message_count"), j.get("clients")), (0, 2))
    uj = e.expect(type="user_joined")
    check_env(t, "user_joined to the envelope member", uj, "user_joined", f.id, "mixed-room")
    t.eq("user_joined data", uj.get("data"),
         {"session_id": sid, "name": "guest-" + f.id[:4], "clients": 2})

    # envelope chat_message -> flat message_added (and envelope chat_message to the sender)
    e.send(env("chat_message", {"content": "hello from envelope ✓", "thread_id": "th-1"},
               "mixed-room"))
    mine = e.expect(type="chat_message")
    check_env(t, "chat_message echo to the sender", mine, "chat_message", ME, "mixed-room")
    md = mine.get("data", {})
    t.keys("chat_message data keys", md, {"message_id", "seq", "session_id", "role", "content",
                                          "created_at", "thread_id", "author"})
    t.eq("chat_message author: the envelope's client_id names a client that gave no name",
         md.get("author"), {"name": "test", "connection_id": e.id})
    t.is_int("chat_message message_id", md.get("message_id"), 1)
    t.eq("chat_message seq: the first in its session", md.get("seq"), 1)
    t.eq("chat_message data values", (md.get("session_id"), md.get("role"), md.get("content"),
                                      md.get("thread_id")),
         (sid, "user", "hello from envelope ✓", "th-1"))
    t.match("chat_message created_at", md.get("created_at"), TS_RE)
    fa = f.expect(type="session_update", update_type="message_added")
    t.eq("flat member gets message_added for the envelope chat_message",
         (fa.get("session_id"), fa.get("message_count"), fa["message"].get("id"),
          fa["message"].get("role"), fa["message"].get("content"),
          fa["message"].get("connection_id"), fa["message"].get("created_at")),
         (sid, 1, md.get("message_id"), "user", "hello from envelope ✓", e.id,
          md.get("created_at")))
    t.eq("chat_message does not ask the assistant",
         e.quiet(0.6, type=REPLY_TYPES) + f.take_all(type=FLAT_REPLY), [])

    # flat chat -> envelope chat_message; both see the reply
    text = "flat  says hi ✓"
    ack = f.chat(text)
    ec = e.expect(type="chat_message")
    check_env(t, "flat chat seen by envelope", ec, "chat_message", f.id, "mixed-room")
    t.eq("flat chat seen by envelope: data",
         ec.get("data"), {"message_id": ack["message"]["id"], "seq": ack["message"]["seq"],
                          "session_id": sid, "role": "user",
                          "content": text, "created_at": ack["message"]["created_at"],
                          "author": {"name": "guest-" + f.id[:4], "connection_id": f.id}})
    ef = read_env_reply(e)
    ff = read_flat_reply(f, sid)
    check_env_reply(t, "flat chat: envelope member's reply", ef, sid, text, "mixed-room", f.id)
    parley.check_reply(t, "flat chat: flat member's reply", ff, sid, text)
    t.eq("same response_id for both dialects", ef[1]["data"].get("response_id"),
         ff[1].get("response_id"))

    # envelope llm_request -> flat sees the user message and the reply
    text2 = "tell me   something"
    e.send(env("llm_request", {"content": text2, "metadata": {"k": [1, 2]}}, "mixed-room"))
    ue = e.expect(type="chat_message")
    t.eq("llm_request: stored as a user message, seen by the sender",
         (ue["data"].get("role"), ue["data"].get("content"), ue.get("client_id")),
         ("user", text2, ME))
    fu = f.expect(type="session_update", update_type="message_added")
    t.eq("llm_request: flat member gets message_added",
         (fu["message"].get("role"), fu["message"].get("content"),
          fu["message"].get("connection_id")), ("user", text2, e.id))
    ef = read_env_reply(e)
    ff = read_flat_reply(f, sid)
    done = check_env_reply(t, "llm_request: envelope reply", ef, sid, text2, "mixed-room")
    parley.check_reply(t, "llm_request: flat member's reply", ff, sid, text2)
    if done:
        t.eq("llm_request: message_count 5 after the reply", done.get("message_count"), 5)

    # REST sees the channel's session with its name
    lst = r.get("/sessions")
    t.eq("REST GET /sessions: 200", lst.status, 200)
    rows = [s for s in lst.body.get("sessions", []) if s.get("session_id") == sid]
    t.eq("REST GET /sessions: the channel's session listed once", len(rows), 1)
    if rows:
        t.eq("REST: channel and title are the name", (rows[0].get("channel"),
                                                      rows[0].get("title")),
             ("mixed-room", "mixed-room"))
        t.eq("REST: message_count 5", rows[0].get("message_count"), 5)
    one = r.get("/sessions/%s" % sid)
    t.eq("REST GET /sessions/{id}: 200", one.status, 200)
    t.eq("REST GET /sessions/{id}: roles and contents",
         [(m.get("role"), m.get("content")) for m in one.body.get("messages", [])],
         [("user", "hello from envelope ✓"), ("user", text), ("assistant", text),
          ("user", text2), ("assistant", text2)])
    e.close()
    f.close()


# ------------------------------------------------------------------ message types

def expect_error(t, c, name, msg, code, field=None, request_type=None):
    c.send(msg)
    try:
        er = c.expect(type="error")
    except parley.ExpectError as ex:
        t.fail("%s: error %s" % (name, code), str(ex))
        return None
    check_env(t, "%s: error framing" % name, er, "error")
    ERROR_CLIENT_IDS.append((name, er.get("client_id"), ME))
    d = er.get("data", {})
    t.eq("%s: code" % name, d.get("code"), code)
    t.ok("%s: data has code, message (+ request_type)" % name,
         {"code", "message"} <= set(d) <= {"code", "message", "request_type"}, repr(d))
    t.ok("%s: non-empty message" % name,
         isinstance(d.get("message"), str) and d["message"].strip() != "", repr(d))
    if request_type is not None:
        t.eq("%s: request_type" % name, d.get("request_type"), request_type)
    if field:
        t.ok("%s: message names %r" % (name, field), field in str(d.get("message")), repr(d))
    t.ok("%s: connection still serves (ping -> pong)" % name, c.ping_ok(), "no pong")
    return er


def test_types(t, b, r):
    a = connect(b, "A")
    # auth with no keys configured: success, whatever the key
    a.send(env("auth", {}))
    m = a.expect(type="auth_success")
    check_env(t, "auth (no api_key, no keys configured)", m, "auth_success", ME, None)
    t.eq("auth_success data is empty", m.get("data"), {})
    a.send(env("auth", {"api_key": "pk_whatever"}))
    m = a.expect(type="auth_success")
    t.eq("auth with any key when none are configured: auth_success", m.get("data"), {})

    # ping / pong
    a.send(env("ping"))
    p = a.expect(type="pong")
    check_env(t, "pong", p, "pong", ME, None)
    t.keys("pong data: exactly timestamp", p.get("data"), {"timestamp"})
    t.match("pong data.timestamp", p.get("data", {}).get("timestamp"), TS_RE)

    # subscribe via data.channel and via the envelope's channel
    s1 = subscribe(a, "alpha")
    check_env(t, "subscribe alpha", s1, "subscription_success", ME, "alpha")
    sid1 = s1["data"].get("session_id")
    a.send({"type": "subscribe", "timestamp": None, "client_id": None, "channel": "beta",
            "data": {}})
    s2 = a.expect(type="subscription_success")
    check_env(t, "subscribe with the envelope's channel", s2, "subscription_success", ME,
              "beta")
    t.eq("subscribe with the envelope's channel: data.channel", s2["data"].get("channel"), "beta")
    sid2 = s2["data"].get("session_id")
    t.ok("two channels, two sessions", sid1 != sid2 and SESSION_ID_RE.match(sid2 or ""),
         repr((sid1, sid2)))
    s1b = subscribe(a, "alpha")
    t.eq("subscribing again to a held channel: success, same session",
         (s1b["data"].get("session_id"), s1b["data"].get("clients")), (sid1, 1))

    # a second connection subscribing to an existing name: the same session
    c = env_client(b, "C")
    s = subscribe(c, "alpha")
    t.eq("another connection subscribing to alpha: same session, clients 2",
         (s["data"].get("session_id"), s["data"].get("clients")), (sid1, 2))
    a.expect(type="user_joined")

    # chat_message with thread_id, to both subscribers; without thread_id
    a.send(env("chat_message", {"content": "in a thread", "thread_id": "T-42"}, "alpha"))
    for x in (a, c):
        m = x.expect(type="chat_message")
        check_env(t, "chat_message to %s" % x.name, m, "chat_message", ME, "alpha")
        t.eq("chat_message to %s: content and thread_id" % x.name,
             (m["data"].get("content"), m["data"].get("thread_id")), ("in a thread", "T-42"))
    a.send(env("chat_message", {"content": "no thread"}, "alpha"))
    m = c.expect(type="chat_message")
    t.keys("chat_message without thread_id: no thread_id in data", m.get("data"),
           {"message_id", "seq", "session_id", "role", "content", "created_at", "author"})
    a.expect(type="chat_message")
    t.eq("chat_message: nothing to a channel's non-subscriber (beta only A)",
         [x for x in c.quiet(0.2) if x.get("channel") == "beta"], [])
    code, lines = parley.sql(b.db, "select thread_id from messages where content = 'in a thread';")
    t.eq("database: thread_id stored", lines, ["T-42"])

    # task_update / agent_status to a channel
    a.send(env("task_update", {"task_id": "job-1", "status": "running"}, "alpha"))
    for x in (a, c):
        m = x.expect(type="task_update")
        check_env(t, "task_update to %s" % x.name, m, "task_update", ME, "alpha")
        d = m.get("data", {})
        t.keys("task_update data keys", d, {"task_id", "status", "message_id"})
        t.eq("task_update data", (d.get("task_id"), d.get("status")), ("job-1", "running"))
    a.send(env("agent_status", {"agent_id": "agent-7", "status": "idle"}, "alpha"))
    for x in (a, c):
        m = x.expect(type="agent_status")
        check_env(t, "agent_status to %s" % x.name, m, "agent_status", ME, "alpha")
        d = m.get("data", {})
        t.keys("agent_status data keys", d, {"agent_id", "status", "message_id"})
        t.eq("agent_status data", (d.get("agent_id"), d.get("status")), ("agent-7", "idle"))
    one = r.get("/sessions/%s" % sid1).body
    ev = [m for m in one.get("messages", []) if m.get("role") == "event"]
    t.eq("REST: events stored with role event, content the event as JSON",
         [json.loads(m["content"]) for m in ev],
         [{"type": "task_update", "task_id": "job-1", "status": "running"},
          {"type": "agent_status", "agent_id": "agent-7", "status": "idle"}])

    # null channel: every connection (an unsubscribed envelope one and a flat one too)
    lone = env_client(b, "L")
    flat = connect(b, "F")
    fsid = flat.create_session()
    a.send(env("task_update", {"task_id": "g-1", "status": "queued"}, None))
    for x in (a, c, lone):
        m = x.expect(type="task_update", pred=lambda m: m.get("data", {}).get("task_id") == "g-1")
        check_env(t, "global task_update to %s" % x.name, m, "task_update", ME, None)
        t.eq("global task_update data to %s" % x.name,
             (m["data"].get("task_id"), m["data"].get("status")), ("g-1", "queued"))
    fm = flat.expect(type="session_update", update_type="message_added")
    t.keys("global task_update to a flat client: message_added with exactly the flat fields",
           fm, {"type", "session_id", "update_type", "message_count", "message"})
    t.eq("global task_update to a flat client: role event, content the event",
         (fm.get("message", {}).get("role"), json.loads(fm.get("message", {}).get("content", "{}")),
          fm.get("message", {}).get("connection_id")),
         ("event", {"type": "task_update", "task_id": "g-1", "status": "queued"}, a.id))
    t.ok("global task_update is not stored in the flat client's session",
         fm.get("session_id") != fsid, repr(fm))
    a.send(env("agent_status", {"agent_id": "ag-g", "status": "up"}))
    for x in (a, c, lone):
        m = x.expect(type="agent_status", pred=lambda m: m.get("data", {}).get("agent_id") ==
                     "ag-g")
        check_env(t, "global agent_status to %s" % x.name, m, "agent_status", ME, None)
    flat.expect(type="session_update", update_type="message_added")
    glob = [s for s in r.get("/sessions").body.get("sessions", []) if s.get("channel") ==
            "_global"]
    t.eq("REST: null-channel events kept in the _global channel (2 messages)",
         [s.get("message_count") for s in glob], [2])

    # unsubscribe, not subscribed, resubscribe
    a.send(env("unsubscribe", {"channel": "beta"}))
    u = a.expect(type="unsubscription_success")
    check_env(t, "unsubscribe beta", u, "unsubscription_success", ME, "beta")
    t.eq("unsubscription_success data", u.get("data"), {"channel": "beta"})
    expect_error(t, a, "unsubscribe a channel not held", env("unsubscribe", {"channel": "beta"}),
                 "not_in_session", request_type="unsubscribe")
    expect_error(t, a, "chat_message to a channel not subscribed",
                 env("chat_message", {"content": "x"}, "beta"), "not_in_session",
                 request_type="chat_message")
    s = subscribe(a, "beta")
    t.eq("resubscribe: the same session again", s["data"].get("session_id"), sid2)
    a.send(env("unsubscribe", {}, "alpha"))
    u = a.expect(type="unsubscription_success")
    t.eq("unsubscribe with the envelope's channel", u.get("data"), {"channel": "alpha"})
    ul = c.expect(type="user_left")
    check_env(t, "user_left to the other subscriber", ul, "user_left", ME, "alpha")
    a.send(env("chat_message", {"content": "after leaving"}, "beta"))
    a.expect(type="chat_message")
    c.send(env("chat_message", {"content": "only C"}, "alpha"))
    c.expect(type="chat_message")
    t.eq("after unsubscribe, alpha's messages no longer reach A",
         [m for m in a.quiet(0.4) if m.get("channel") == "alpha"], [])

    # unknown type, missing / wrong-typed fields
    expect_error(t, a, "unknown type", env("frobnicate"), "unknown_type",
                 request_type="frobnicate")
    expect_error(t, a, "flat type in the envelope dialect", env("create_session"),
                 "unknown_type", request_type="create_session")
    expect_error(t, a, "subscribe without channel", env("subscribe", {}), "invalid_field",
                 "channel", "subscribe")
    expect_error(t, a, "subscribe channel number", env("subscribe", {"channel": 5}),
                 "invalid_field", "channel", "subscribe")
    expect_error(t, a, "chat_message without content", env("chat_message", {}, "beta"),
                 "invalid_field", "content", "chat_message")
    expect_error(t, a, "chat_message content number",
                 env("chat_message", {"content": 5}, "beta"), "invalid_field", "content")
    expect_error(t, a, "chat_message thread_id number",
                 env("chat_message", {"content": "x", "thread_id": 5}, "beta"),
                 "invalid_field", "thread_id")
    expect_error(t, a, "chat_message without channel",
                 env("chat_message", {"content": "x"}, None), "invalid_field", "channel")
    expect_error(t, a, "task_update without task_id",
                 env("task_update", {"status": "x"}, "beta"), "invalid_field", "task_id")
    expect_error(t, a, "task_update without status",
                 env("task_update", {"task_id": "x"}, "beta"), "invalid_field", "status")
    expect_error(t, a, "agent_status without agent_id",
                 env("agent_status", {"status": "x"}, "beta"), "invalid_field", "agent_id")
    expect_error(t, a, "agent_status status number",
                 env("agent_status", {"agent_id": "x", "status": 1}, "beta"),
                 "invalid_field", "status")
    expect_error(t, a, "llm_request without content", env("llm_request", {}, "beta"),
                 "invalid_field", "content", "llm_request")
    expect_error(t, a, "llm_request metadata not an object",
                 env("llm_request", {"content": "x", "metadata": [1]}, "beta"),
                 "invalid_field", "metadata")
    expect_error(t, a, "llm_request template number",
                 env("llm_request", {"content": "x", "template": 3}, "beta"),
                 "invalid_field", "template")
    expect_error(t, a, "llm_request unknown template",
                 env("llm_request", {"content": "x", "template": "nope"}, "beta"),
                 "invalid_field", "template", "llm_request")
    # a flat-looking message on an envelope connection (no data): type still dispatched
    a.send({"type": "ping"})
    p = a.expect(type="pong")
    check_env(t, "ping without data on an envelope connection", p, "pong", ME, None)
    t.eq("errors left nothing unexpected", [m for m in a.quiet(0.2) if m.get("type") ==
                                            "error"], [])
    for x in (a, c, lone, flat):
        x.close()


def test_llm(t, b):
    a = env_client(b, "A")
    subscribe(a, "llm-room")
    sid = None
    text = "  one two   three ✓ "
    a.send(env("llm_request", {"content": text}, "llm-room"))
    u = a.expect(type="chat_message")
    sid = u["data"].get("session_id")
    frames = read_env_reply(a)
    check_env_reply(t, "llm_request in a channel", frames, sid, text, "llm-room")

    # template from --templates-dir
    a.send(env("llm_request", {"content": "with template", "template": "concise"}, "llm-room"))
    a.expect(type="chat_message")
    frames = read_env_reply(a)
    check_env_reply(t, "llm_request with a known template", frames, sid, "with template",
                    "llm-room")

    # channel null: a private session of that connection, streamed back to it
    a.send(env("llm_request", {"content": "private words"}, None))
    u = a.expect(type="chat_message")
    psid = u["data"].get("session_id")
    t.ok("llm_request with channel null: a session of its own", psid != sid and
         SESSION_ID_RE.match(psid or ""), repr(u))
    frames = read_env_reply(a)
    check_env_reply(t, "llm_request with channel null", frames, psid, "private words", "-")
    a.send(env("llm_request", {"content": "again private"}, None))
    u = a.expect(type="chat_message")
    t.eq("second private llm_request: the same private session", u["data"].get("session_id"),
         psid)
    frames = read_env_reply(a)
    done = check_env_reply(t, "second private llm_request", frames, psid, "again private", "-")
    if done:
        t.eq("private session: multi-turn (message_count 4)", done.get("message_count"), 4)
    a.close()


def test_channel_names(t, b):
    a = env_client(b, "A")
    good = ["x", "c" * 64, "a.b", "a_b", "a:b", "a-b", "A.Z_a-z:0-9", "...", "-", ":", "_"]
    for name in good:
        a.send(env("subscribe", {"channel": name}))
        try:
            m = a.expect(type=one_of("subscription_success", "error"))
        except parley.ExpectError as ex:
            t.fail("channel %r accepted" % name, str(ex))
            continue
        t.eq("channel %r (%d chars) accepted" % (name[:20], len(name)),
             (m.get("type"), m.get("channel")), ("subscription_success", name))
        a.send(env("unsubscribe", {"channel": name}))
        a.expect(type=one_of("unsubscription_success", "error"))
    bad = ["c" * 65, "", "a b", "a/b", "caf\u00e9", "\u2713", "a\tb", "a#b", "a,b", "../x",
           "a\u0000b"]
    for name in bad:
        expect_error(t, a, "channel %r refused" % name[:20], env("subscribe", {"channel": name}),
                     "invalid_field", "channel", "subscribe")
    n = len([s for s in parley.sql(b.db, "select channel from sessions where channel is not "
                                          "null;")[1]])
    t.eq("database: only the accepted channels exist (plus none refused)", n, len(good))
    a.close()


def main(t):
    tdir = parley.make_tmpdir()
    with open(os.path.join(tdir, "concise.txt"), "w") as f:
        f.write("Answer in one short sentence.\n")
    r = Rest(t)
    b = Broker(t, tmpdir=r.tmpdir, port=r.ws_port, flags=dict(FLAGS, **{"--templates-dir": tdir}))
    with t.section("mixed"):
        test_mixed(t, b, r)
    with t.section("types"):
        test_types(t, b, r)
    with t.section("llm"):
        test_llm(t, b)
    with t.section("channel names"):
        b2 = Broker(t, name="parley-broker-names", flags=FLAGS)
        test_channel_names(t, b2)
        parley.close_clients()
        b2.stop()
    bad = [x for x in ERROR_CLIENT_IDS if x[1] != x[2]]
    t.ok("envelope errors are direct answers: client_id is the receiver (%d errors)"
         % len(ERROR_CLIENT_IDS), ERROR_CLIENT_IDS and not bad,
         "%d of %d differ, e.g. %r" % (len(bad), len(ERROR_CLIENT_IDS), bad[:3]))
    parley.close_clients()
    b.stop()
    r.stop()


parley.run(main)
