"""People in a room, names (SPEC 9): `name` in create_session / join_session and `?name=`
on the upgrade; the default names (guest- and 4 characters of the connection id, or the API
key's name); `author` {name, connection_id} in message_added, replays, REST history,
search and export; `name` in user_joined, user_left, user_typing; `names` in a presence
update; `session_joined.members`, the joiner included; the author stored with each
message (messages.author_name); bad names answered invalid_field (or 400 on the upgrade)."""

import os
import re
import socket
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, WsClient, run_cli, sql  # noqa: E402

FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}
ALICE = "Alice ✓"  # not ASCII: percent-encoded on the upgrade URL


def guest(conn_id):
    return "guest-" + conn_id[:4]


def connect(b, label, name=None, key=None):
    query = []
    if name is not None:
        query.append("name=" + urllib.parse.quote(name, safe=""))
    if key:
        query.append("api_key=" + key)
    c = WsClient(b.url + ("?" + "&".join(query) if query else ""), name=label)
    c.id = c.expect(type="connected")["connection_id"]
    return c


def upgrade_status(port, path):
    """The HTTP status of a hand-made upgrade request for path."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n" % (path, port)).encode())
        buf = b""
        deadline = time.monotonic() + 5
        while b"\r\n" not in buf and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        m = re.match(rb"^HTTP/1\.[01] (\d{3})", buf)
        return int(m.group(1)) if m else None
    finally:
        sock.close()


def members(ev):
    return sorted(ev.get("members") or [], key=lambda m: m.get("connection_id", ""))


def want_members(*pairs):
    return sorted([{"connection_id": c, "name": n} for c, n in pairs],
                  key=lambda m: m["connection_id"])


def author(m):
    return m.get("author", "absent")


def test_room(t, rest, b):
    alice = connect(b, "alice", name=ALICE)
    bob = connect(b, "bob")
    carol = connect(b, "carol")

    sid = alice.create_session(title="names")
    t.eq("?name= percent-decoded: the creator's session_joined is session_created only",
         alice.quiet(0.2, type="session_joined"), [])

    j = bob.join(sid, name="Bob")
    t.eq("session_joined.members: both, the joiner included, with their names", members(j),
         want_members((alice.id, ALICE), (bob.id, "Bob")))
    uj = alice.expect(type="session_update", update_type="user_joined")
    t.eq("user_joined carries the joiner's name", uj,
         {"type": "session_update", "session_id": sid, "update_type": "user_joined",
          "connection_id": bob.id, "name": "Bob", "clients": 2})

    j = carol.join(sid)
    t.eq("three members: carol's default name is guest- + 4 characters of its id", members(j),
         want_members((alice.id, ALICE), (bob.id, "Bob"), (carol.id, guest(carol.id))))
    for x in (alice, bob):
        uj = x.expect(type="session_update", update_type="user_joined")
        t.eq("user_joined C to %s: name guest-xxxx" % x.name,
             (uj.get("connection_id"), uj.get("name"), uj.get("clients")),
             (carol.id, guest(carol.id), 3))

    # messages: every member sees each with its author
    said = [(alice, ALICE, "hello from alice"), (bob, "Bob", "hi, bob here"),
            (carol, guest(carol.id), "carol says hi")]
    ids = []
    for who, name, text in said:
        who.send({"type": "chat", "message": text})
        for x in (alice, bob, carol):
            ev = x.expect(type="session_update", update_type="message_added",
                          pred=lambda m, text=text: m["message"].get("content") == text)
            t.eq("message_added %r to %s: author" % (text, x.name), author(ev["message"]),
                 {"name": name, "connection_id": who.id})
        ids.append(ev["message"]["id"])

    # typing carries the typist's name
    bob.send({"type": "typing_start"})
    for x in (alice, carol):
        ev = x.expect(type="session_update", update_type="user_typing")
        t.eq("user_typing to %s: exact, with name" % x.name, ev,
             {"type": "session_update", "session_id": sid, "update_type": "user_typing",
              "connection_id": bob.id, "name": "Bob", "typing": True})
    bob.send({"type": "typing_stop"})
    for x in (alice, carol):
        x.expect(type="session_update", update_type="user_typing", typing=False)

    # a late joiner: replay with authors, members of all four
    dave = connect(b, "dave")
    j = dave.join(sid, since=0, name="Dave")
    t.eq("replay (since=0): authors in order",
         [(m.get("content"), author(m)) for m in j.get("messages") or []],
         [(text, {"name": name, "connection_id": who.id}) for who, name, text in said])
    t.eq("late joiner: members of all four", members(j),
         want_members((alice.id, ALICE), (bob.id, "Bob"), (carol.id, guest(carol.id)),
                      (dave.id, "Dave")))
    j = dave.join(sid, since=ids[0], name="Dave")
    t.eq("replay (since=first): the rest, with authors",
         [author(m)["name"] for m in j.get("messages") or []], ["Bob", guest(carol.id)])
    for x in (alice, bob, carol):
        x.expect(type="session_update", update_type="user_joined", connection_id=dave.id,
                 name="Dave")

    # REST: a name in the body, the key's name (none here), or no author at all
    r = rest.post("/sessions/%s/messages" % sid, {"content": "from rest", "name": "Rita"})
    t.eq("POST messages with name: 201", r.status, 201)
    t.eq("POST messages with name: author {name, connection_id null}", author(r.body),
         {"name": "Rita", "connection_id": None})
    ev = alice.expect(type="session_update", update_type="message_added",
                      pred=lambda m: m["message"].get("content") == "from rest")
    t.eq("members see the REST message's author", author(ev["message"]),
         {"name": "Rita", "connection_id": None})
    r = rest.post("/sessions/%s/messages" % sid, {"content": "anonymous"})
    t.eq("POST messages without name or key: no author", (r.status, author(r.body)),
         (201, "absent"))
    ev = alice.expect(type="session_update", update_type="message_added",
                      pred=lambda m: m["message"].get("content") == "anonymous")
    t.eq("members: no author for it either", author(ev["message"]), "absent")

    want_history = [(text, {"name": name, "connection_id": who.id})
                    for who, name, text in said] + [
        ("from rest", {"name": "Rita", "connection_id": None}), ("anonymous", "absent")]
    r = rest.get("/sessions/%s" % sid)
    t.eq("REST history: authors", [(m.get("content"), author(m)) for m in r.body["messages"]],
         want_history)
    r = rest.get("/sessions/%s/export?format=json" % sid)
    t.eq("export json: authors", [(m.get("content"), author(m)) for m in r.body["messages"]],
         want_history)
    r = rest.get("/sessions/%s/export?format=markdown" % sid)
    body = r.body if isinstance(r.body, str) else r.body.decode() if isinstance(
        r.body, bytes) else ""
    t.ok("export markdown: '### Alice ✓ (user) · ...' heads alice's message",
         re.search(r"^### Alice ✓ \(user\) · \S+\n\nhello from alice$", body, re.M) is not None,
         body[:300])
    t.ok("export markdown: a message without author keeps '### user · ...'",
         re.search(r"^### user · \S+\n\nanonymous$", body, re.M) is not None, body[-200:])
    r = rest.get("/sessions/%s/messages?q=bob" % sid)
    t.eq("search: the match carries its author",
         [(m.get("content"), author(m)) for m in r.body.get("messages", [])],
         [("hi, bob here", {"name": "Bob", "connection_id": bob.id})])

    code, lines = sql(b.db, "SELECT coalesce(author_name, '-') FROM messages WHERE "
                            "session_id = '%s' ORDER BY seq;" % sid)
    t.eq("database: messages.author_name", (code, lines),
         (0, [ALICE, "Bob", guest(carol.id), "Rita", "-"]))

    # a later name replaces the earlier one
    bob.send({"type": "join_session", "session_id": sid, "name": "Robert"})
    bob.expect(type="session_joined")
    ev = bob.chat("call me robert")
    t.eq("the last name given is the connection's", author(ev["message"])["name"], "Robert")

    # leaving: user_left carries the name
    bob.request({"type": "leave_session"}, type="session_left")
    for x in (alice, carol, dave):
        ul = x.expect(type="session_update", update_type="user_left", connection_id=bob.id)
        t.eq("user_left to %s: exact, with name" % x.name, ul,
             {"type": "session_update", "session_id": sid, "update_type": "user_left",
              "connection_id": bob.id, "name": "Robert", "clients": 3})


def test_presence(t, rest, b):
    watcher = connect(b, "watcher", name="Watcher")
    sid = watcher.create_session()
    names = ["p%d" % i for i in range(6)]
    joiners = [connect(b, n, name=n) for n in names]
    for c in joiners:
        c.send({"type": "join_session", "session_id": sid})
    for c in joiners:
        c.expect(type="session_joined")
    told = {}
    deadline = time.monotonic() + 10
    while len(told) < len(joiners) and time.monotonic() < deadline:
        ev = watcher.expect(timeout=10, type="session_update",
                            pred=lambda m: m.get("update_type") in ("user_joined", "presence"))
        if ev["update_type"] == "user_joined":
            told[ev["connection_id"]] = ev.get("name")
        else:
            t.eq("presence: names maps exactly the ids it lists",
                 sorted((ev.get("names") or {}).keys()), sorted(ev["joined"] + ev["left"]))
            for cid in ev["joined"]:
                told[cid] = (ev.get("names") or {}).get(cid)
    t.eq("every join told with its name (user_joined or presence names)",
         told, {c.id: c.name for c in joiners})
    last = connect(b, "last")
    j = last.join(sid)
    t.eq("session_joined.members after the burst: all eight, exact", members(j),
         want_members((watcher.id, "Watcher"), (last.id, guest(last.id)),
                      *[(c.id, c.name) for c in joiners]))


def test_bad_names(t, rest, b):
    c = connect(b, "bad")
    sid = c.create_session()
    bad = [("65 characters", "x" * 65), ("empty", ""), ("a newline", "a\nb"),
           ("a tab", "a\tb"), ("DEL", "a\x7fb"), ("a C1 control", "a\x85b"), ("a number", 7)]
    for what, name in bad:
        for msg in ({"type": "create_session", "name": name},
                    {"type": "join_session", "session_id": sid, "name": name}):
            ev = c.request(msg, type="error")
            t.eq("%s %s: invalid_field naming 'name'" % (msg["type"], what),
                 (ev.get("code"), ev.get("request_type"), "'name'" in ev.get("message", "")),
                 ("invalid_field", msg["type"], True))
    t.eq("no session made or joined by a bad name", c.quiet(0.3, type="session_created") +
         c.take_all(type="session_joined"), [])
    ev = c.chat("still me")
    t.eq("a refused name leaves the name as it was", author(ev["message"])["name"], guest(c.id))

    long_ok = "✓" * 64  # 64 characters, 192 bytes
    sid2 = c.create_session(name=long_ok)
    ev = c.chat("sixty-four")
    t.eq("a 64-character multibyte name is accepted", author(ev["message"]),
         {"name": long_ok, "connection_id": c.id})
    r = rest.get("/sessions/%s" % sid2)
    t.eq("REST history: the 64-character name as stored", author(r.body["messages"][0])["name"],
         long_ok)

    for what, name in bad:
        r = rest.post("/sessions/%s/messages" % sid, {"content": "x", "name": name})
        t.eq("POST messages name %s: 400 invalid_field naming 'name'" % what,
             (r.status, (r.body.get("error") or {}).get("code"),
              "'name'" in (r.body.get("error") or {}).get("message", "")),
             (400, "invalid_field", True))

    for what, q in (("65 characters", "x" * 65), ("empty", ""), ("a tab", "a%09b"),
                    ("invalid UTF-8", "%FF%FE")):
        t.eq("upgrade with ?name= %s: refused 400" % what,
             upgrade_status(b.port, "/ws?name=" + q), 400)
    # lws itself drops a request whose decoded URI holds a newline, before the broker sees it
    t.ok("upgrade with ?name= holding a newline: refused (400, or closed by lws)",
         upgrade_status(b.port, "/ws?name=a%0Ab") in (400, None))
    t.eq("upgrade with ?name= of 64 multibyte characters: 101",
         upgrade_status(b.port, "/ws?name=" + urllib.parse.quote(long_ok)), 101)


def test_key_names(t):
    rest = Rest(t)
    code, out, _ = run_cli("parley-rest", ["--db", rest.db, "--notify-socket",
                                           rest.notify_socket, "keys", "add", "carol-key"])
    t.eq("keys add carol-key: exit 0", code, 0)
    key = out.strip()
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none", flags=FLAGS)
    auth = {"Authorization": "Bearer " + key}
    try:
        r = rest.request("POST", "/sessions/new", {}, headers=auth)
        sid = r.body["session_id"]
        k = connect(b, "keyed", key=key)
        j = k.join(sid)
        t.eq("with a key: the default name is the key's name", members(j),
             want_members((k.id, "carol-key")))
        ev = k.chat("keyed hello")
        t.eq("with a key: the author is the key's name", author(ev["message"]),
             {"name": "carol-key", "connection_id": k.id})
        r = rest.request("POST", "/sessions/%s/messages" % sid, {"content": "rest keyed"},
                         headers=auth)
        t.eq("POST messages with a key and no name: author is the key's name",
             (r.status, author(r.body)), (201, {"name": "carol-key", "connection_id": None}))
        r = rest.request("POST", "/sessions/%s/messages" % sid,
                         {"content": "rest named", "name": "Carol"}, headers=auth)
        t.eq("POST messages with a key and a name: the name", author(r.body)["name"], "Carol")
        n = connect(b, "named", name="Named", key=key)
        j = n.join(sid)
        t.eq("?name= wins over the key's name", members(j),
             want_members((k.id, "carol-key"), (n.id, "Named")))
        j = k.join(sid, name="Carol")
        ev = k.chat("renamed")
        t.eq("a name given in join_session wins over the key's name", author(ev["message"]),
             {"name": "Carol", "connection_id": k.id})
    finally:
        parley.close_clients()
        b.stop()
        rest.stop()


def main(t):
    rest = Rest(t)
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none", flags=FLAGS)
    for name, fn in (("a room of named people", test_room), ("presence", test_presence),
                     ("bad names", test_bad_names)):
        with t.section(name):
            fn(t, rest, b)
        parley.close_clients()
    b.stop()
    rest.stop()
    with t.section("key names"):
        test_key_names(t)


if __name__ == "__main__":
    parley.run(main)
