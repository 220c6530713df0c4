"""The envelope dialect passes the seed's schema (issue 16; SPEC 3, 3.3): every server
message of envelope sessions is validated with the npm `zod` package against exactly the
Nova guide's schema {type: string, timestamp: string, client_id: string, channel: string |
null, data: object} (tests/lib/seed_schema.mjs), and client_id is the right string: the
connection's own for direct answers, the causing client's for broadcasts (a chat, a join,
a leave), the requester's for the assistant's reply, "parley" for what REST did. Sessions:
connected on /ws/{client_id} and on /ws?dialect=envelope (connected is an envelope then),
auth with a key (success and failure), subscribe/unsubscribe, chat_message, llm_request
with the echo assistant, task_update, agent_status, errors (bad JSON, unknown type, an
invalid field, an invalid client_id), ping, presence, events caused by another client
(envelope and flat) and by REST. Also: an invalid /ws/{client_id} or ?dialect= is refused
with 400, and without a choice the greeting stays flat."""

import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import ROOT, Broker, Rest, one_of  # noqa: E402

FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}
REPLY = one_of("status", "response_start", "llm_chunk", "response_complete")
ENVELOPE_CLIENTS = []


def env(type_, data=None, channel=None, client_id="alice"):
    return {"type": type_, "timestamp": "2026-01-20T12:34:56.789Z", "client_id": client_id,
            "channel": channel, "data": {} if data is None else data}


def client(b, name, path):
    c = parley.WsClient(b.url + path, name=name)
    ENVELOPE_CLIENTS.append(c)
    return c


def upgrade_status(b, path):
    try:
        sock, _ = parley.ws_handshake(b.port, path=path)
    except ValueError as e:
        return str(e)
    sock.close()
    return 101


def reply_frames(c, timeout=20.0):
    frames = []
    while True:
        f = c.expect(timeout=timeout, type=REPLY)
        frames.append(f)
        if f["type"] == "response_complete":
            return frames


def scenario(t, b, r, key):
    # ---- refused upgrades, and the default stays flat
    for path in ("/ws/", "/ws/a%20b", "/ws/" + "c" * 65, "/ws/a/b", "/ws?dialect=xml",
                 "/ws/alice?dialect=json"):
        t.eq("upgrade %s: refused with 400" % path[:40], upgrade_status(b, path),
             "handshake answered b'HTTP/1.1 400 Bad Request'")
    t.eq("upgrade /ws/ok-id_1.2:3: 101", upgrade_status(b, "/ws/ok-id_1.2:3"), 101)
    t.eq("upgrade /wsx: 404", upgrade_status(b, "/wsx"),
         "handshake answered b'HTTP/1.1 404 Not Found'")
    plain = parley.WsClient(b.url, name="plain")
    g = plain.expect(type="connected")
    t.ok("without a choice, connected is flat (connection_id at the top level)",
         "connection_id" in g and "data" not in g, repr(g))
    plain.close()

    # ---- /ws/{client_id}: connected is an envelope, client_id the path's
    a = client(b, "alice", "/alice")
    g = a.expect(type="connected")
    t.eq("/ws/alice: connected client_id and channel", (g.get("client_id"), g.get("channel")),
         ("alice", None))
    a.id = g.get("data", {}).get("connection_id")
    t.match("/ws/alice: connected data.connection_id", a.id, r"^[0-9a-f]{12}$")
    t.eq("/ws/alice: connected data keys", sorted(g.get("data", {})),
         ["connection_id", "message", "server_info"])
    t.eq("/ws/alice: auth required", g["data"]["server_info"].get("auth_required"), True)

    # auth failure: auth_failure, then close 1008
    m = client(b, "mallory", "/mallory")
    m.expect(type="connected")
    m.send(env("auth", {"api_key": "pk_" + "0" * 40}, client_id="mallory"))
    f = m.expect(type="auth_failure")
    t.eq("auth_failure: client_id mallory", f.get("client_id"), "mallory")
    m.wait_closed(timeout=5)

    a.send(env("auth", {"api_key": key}))
    t.eq("auth_success: client_id alice", a.expect(type="auth_success").get("client_id"),
         "alice")

    # ---- ?dialect=envelope: connected is an envelope, client_id the connection id
    bo = client(b, "bob", "?dialect=envelope")
    g = bo.expect(type="connected")
    bo.id = g.get("data", {}).get("connection_id")
    t.eq("?dialect=envelope: connected client_id is the connection id until one is given",
         (g.get("client_id"), g.get("channel")), (bo.id, None))
    bo.send(env("auth", {"api_key": key}, client_id="bob"))
    t.eq("auth_success to bob: client_id bob (its message's)",
         bo.expect(type="auth_success").get("client_id"), "bob")

    # ---- subscribe, presence
    a.send(env("subscribe", {"channel": "seed-room"}))
    s = a.expect(type="subscription_success")
    sid = s["data"]["session_id"]
    t.eq("subscription_success: client_id alice, channel", (s["client_id"], s["channel"]),
         ("alice", "seed-room"))
    bo.send(env("subscribe", {"channel": "seed-room"}, client_id="bob"))
    bo.expect(type="subscription_success")
    t.eq("user_joined to alice: client_id bob (the joiner)",
         a.expect(type="user_joined").get("client_id"), "bob")

    # ---- chat_message from alice, seen by both
    a.send(env("chat_message", {"content": "hello seed"}, "seed-room"))
    for c in (a, bo):
        t.eq("chat_message to %s: client_id alice" % c.name,
             c.expect(type="chat_message").get("client_id"), "alice")

    # ---- llm_request: the reply carries the requester's client_id
    a.send(env("llm_request", {"content": "echo these words"}, "seed-room"))
    for c in (a, bo):
        c.expect(type="chat_message")
        frames = reply_frames(c)
        t.eq("llm_request reply to %s: status, response_start, llm_chunks, response_complete"
             % c.name, [frames[0]["type"], frames[1]["type"], frames[-1]["type"]],
             ["status", "response_start", "response_complete"])
        t.eq("llm_request reply to %s: every message's client_id is alice (the requester)"
             % c.name, sorted({f.get("client_id") for f in frames}), ["alice"])
        t.eq("llm_request reply to %s: the last llm_chunk is final and empty" % c.name,
             (frames[-2]["type"], frames[-2]["data"].get("chunk"),
              frames[-2]["data"].get("is_final")), ("llm_chunk", "", True))

    # ---- events
    bo.send(env("task_update", {"task_id": "t-1", "status": "running"}, "seed-room",
                client_id="bob"))
    for c in (a, bo):
        t.eq("task_update to %s: client_id bob" % c.name,
             c.expect(type="task_update").get("client_id"), "bob")
    a.send(env("agent_status", {"agent_id": "ag-1", "status": "idle"}, None))
    for c in (a, bo):
        m2 = c.expect(type="agent_status")
        t.eq("global agent_status to %s: client_id alice, channel null" % c.name,
             (m2.get("client_id"), m2.get("channel")), ("alice", None))

    # ---- a flat client in the room: its chat and its reply carry its connection id
    fl = parley.WsClient(b.url + "?api_key=" + key, name="flat")
    fid = fl.expect(type="connected").get("connection_id")
    fl.join(sid)
    t.eq("user_joined of a flat client: client_id its connection id",
         a.expect(type="user_joined").get("client_id"), fid)
    bo.expect(type="user_joined")
    fl.send({"type": "chat", "message": "flat words"})
    for c in (a, bo):
        t.eq("flat chat seen by %s: client_id the flat connection id" % c.name,
             c.expect(type="chat_message").get("client_id"), fid)
        t.eq("reply to the flat chat seen by %s: client_id the flat connection id" % c.name,
             sorted({f.get("client_id") for f in reply_frames(c)}), [fid])
    fl.read_reply(sid)

    # ---- REST: "parley"
    res = r.post("/sessions/%s/messages" % sid, body={"content": "from REST"},
                 headers={"Authorization": "Bearer " + key})
    t.eq("REST POST message: 201", res.status, 201)
    for c in (a, bo):
        m2 = c.expect(type="chat_message", pred=lambda x: x["data"].get("content") ==
                      "from REST")
        t.eq("REST message seen by %s: client_id parley" % c.name, m2.get("client_id"),
             "parley")
    res = r.post("/sessions/%s/clear" % sid, headers={"Authorization": "Bearer " + key})
    t.eq("REST clear: 200", res.status, 200)
    for c in (a, bo):
        t.eq("history_cleared to %s: client_id parley" % c.name,
             c.expect(type="history_cleared").get("client_id"), "parley")

    # ---- errors and pong: direct answers carry the receiver's client_id
    for name, msg in (("bad JSON", "{not json"), ("unknown type", env("frobnicate")),
                      ("invalid field", env("chat_message", {}, "seed-room")),
                      ("invalid client_id", env("ping", client_id="a b"))):
        a.send(msg)
        e = a.expect(type="error")
        t.eq("error (%s): client_id alice" % name, e.get("client_id"), "alice")
    t.ok("invalid client_id: the error names client_id", "client_id" in e["data"]["message"],
         repr(e))
    a.send(env("ping"))
    t.eq("pong: client_id alice", a.expect(type="pong").get("client_id"), "alice")

    # ---- unsubscribe, leaving
    bo.send(env("unsubscribe", {"channel": "seed-room"}, client_id="bob"))
    t.eq("unsubscription_success: client_id bob",
         bo.expect(type="unsubscription_success").get("client_id"), "bob")
    t.eq("user_left to alice: client_id bob", a.expect(type="user_left").get("client_id"),
         "bob")
    fl.close()
    t.eq("user_left of the flat client: client_id its connection id",
         a.expect(type="user_left").get("client_id"), fid)
    a.send(env("ping"))
    a.expect(type="pong")
    bo.send(env("ping", client_id="bob"))
    bo.expect(type="pong")


def validate(t):
    msgs = []
    for c in ENVELOPE_CLIENTS:
        msgs += c.received
    path = os.path.join(parley.make_tmpdir(), "messages.json")
    with open(path, "w") as f:
        json.dump(msgs, f)
    p = subprocess.run(["node", os.path.join(ROOT, "tests", "lib", "seed_schema.mjs"), path],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    t.ok("node seed_schema.mjs: exit 0", p.returncode == 0, p.stderr[-500:])
    try:
        out = json.loads(p.stdout)
    except ValueError:
        t.fail("node seed_schema.mjs: a JSON summary", p.stdout[-500:] + p.stderr[-500:])
        return
    t.eq("zod validated every envelope server message (%d)" % len(msgs),
         out.get("validated"), len(msgs))
    t.ok("at least 40 messages validated", len(msgs) >= 40, str(len(msgs)))
    t.eq("no message fails the seed's schema", out.get("failed"), [])
    t.eq("the types seen", sorted(out.get("types", {})),
         sorted(["connected", "auth_failure", "auth_success", "subscription_success",
                 "user_joined", "chat_message", "status", "response_start", "llm_chunk",
                 "response_complete", "task_update", "agent_status", "history_cleared",
                 "error", "pong", "unsubscription_success", "user_left"]))


def main(t):
    r = Rest(t)
    code, out, err = parley.run_cli("parley-rest", ["--db", r.db, "--notify-socket",
                                                    r.notify_socket, "keys", "add", "seed"])
    t.ok("keys add seed: exit 0", code == 0, err)
    key = out.strip()
    b = Broker(t, tmpdir=r.tmpdir, port=r.ws_port, flags=FLAGS)
    with t.section("scenario"):
        scenario(t, b, r, key)
    parley.close_clients()
    validate(t)
    b.stop()
    r.stop()


parley.run(main)
