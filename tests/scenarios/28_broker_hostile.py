"""Hostile input and the bounds of SPEC 6 (issue 12): the single frame that used to kill
the broker, text echoed back cut on a character boundary, exact listening addresses,
replays of long conversations in bounded frames that never close the connection
(has_more, last_id), a burst of joins costing O(N) presence frames, notifications REST
could not deliver caught up by the broker's reconcile, revoked keys closing live
connections."""

import json
import os
import select
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, run_cli, ws_frame, ws_handshake  # noqa: E402

EMOJI = "\U0001f600"
ELLIPSIS = "\u2026"


def connect(b, name, **kw):
    c = b.client(name, **kw)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def env(type_, data=None, channel=None):
    return {"type": type_, "timestamp": "2026-01-01T00:00:00Z", "client_id": "x",
            "channel": channel, "data": {} if data is None else data}


def test_crash_frame(t, b):
    """The frame of issue 12, and others that echo a client's value back."""
    c = connect(b, "E")
    c.send(env("llm_request", {"content": "x", "template": EMOJI * 128}, channel="c"))
    e = c.expect(type="error")
    data = e.get("data", {})
    t.eq("llm_request template of 128 emoji: invalid_field", data.get("code"), "invalid_field")
    t.ok("template of 128 emoji: quoted cut at 64 characters and marked",
         "'" + EMOJI * 64 + ELLIPSIS + "'" in data.get("message", ""), repr(data))
    t.ok("template of 128 emoji: the broker lives (ping -> pong)", c.ping_ok(), "no pong")
    c.send(env("llm_request", {"content": "x", "template": EMOJI * 20}, channel="c"))
    e = c.expect(type="error")
    t.ok("template of 20 emoji: quoted whole",
         "'" + EMOJI * 20 + "'" in e.get("data", {}).get("message", ""), repr(e))
    c.close()

    f = connect(b, "F")
    f.send({"type": EMOJI * 64})
    e = f.expect(type="error")
    t.eq("type of 64 emoji: unknown_type", e.get("code"), "unknown_type")
    t.ok("type of 64 emoji: message quotes it whole", EMOJI * 64 in e.get("message", ""),
         repr(e))
    f.send({"type": EMOJI * 65})
    e = f.expect(type="error")
    t.eq("type of 65 emoji: invalid_field", e.get("code"), "invalid_field")
    for typ in ("join_session", "chat", "typing_start", "stop", "leave_session"):
        msg = {"type": typ, "session_id": "\u00e9" * 64, "message": "x"}
        f.send(msg)
        e = f.expect(type="error")
        t.eq("%s with a session_id of 64 'é': session_not_found" % typ,
             (e.get("code"), e.get("request_type")), ("session_not_found", typ))
    f.send({"type": "join_session", "session_id": "\u00e9" * 65})
    e = f.expect(type="error")
    t.eq("join_session with a session_id of 65 characters: invalid_field", e.get("code"),
         "invalid_field")
    t.ok("F: the connection stays open", f.ping_ok(), "no pong")
    f.close()


def listening(port):
    """The local addresses ss shows listening on TCP port."""
    out = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=10).stdout.decode()
    return sorted(line.split()[3] for line in out.splitlines() if line.strip())


def test_bind(t, rest, b):
    t.eq("broker listens on exactly 127.0.0.1 (ss)", listening(b.port),
         ["127.0.0.1:%d" % b.port])
    t.eq("REST listens on exactly 127.0.0.1 (ss)", listening(rest.port),
         ["127.0.0.1:%d" % rest.port])
    if not os.path.exists("/proc/net/if_inet6"):
        t.diag("skipped --bind ::1: this machine has no IPv6")
        return
    b6 = Broker(t, flags={"--bind": "::1"}, name="broker-ipv6")
    t.eq("broker --bind ::1 listens on exactly [::1] (ss)", listening(b6.port),
         ["[::1]:%d" % b6.port])
    log = open(b6.log_path, encoding="utf-8", errors="replace").read()
    t.ok("broker --bind ::1 logs the address it listens on",
         "ws://[::1]:%d/ws" % b6.port in log, log[-500:])
    b6.stop()


def upgrade_status(port, host):
    """The status line and body of an upgrade request carrying this Host header."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % host).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if b" 101 " not in data.split(b"\r\n", 1)[0]:
            s.settimeout(2)
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
        head, _, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode(), body.decode("utf-8", "replace")
    finally:
        s.close()


def test_hosts(t, b):
    """DNS rebinding (SPEC 6): with no API key, only loopback and configured Hosts."""
    port = b.port
    for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "LOCALHOST", "127.9.8.7",
                 "[::1]:%d" % port):
        status, _ = upgrade_status(port, host)
        t.ok("Host %s: upgraded (101)" % host, " 101 " in status + " ", status)
    for host in ("evil.example", "evil.example:%d" % port, "127.0.0.1.evil.example",
                 "localhost.evil.example"):
        status, body = upgrade_status(port, host)
        t.ok("Host %s: refused 403" % host, " 403 " in status + " ", status)
        t.ok("Host %s: the answer says what to do" % host, "--allowed-host" in body, body)
    b2 = Broker(t, flags={"--allowed-host": "chat.example"}, name="broker-allowed-host")
    status, _ = upgrade_status(b2.port, "chat.example")
    t.ok("--allowed-host chat.example: that Host is upgraded", " 101 " in status + " ", status)
    status, _ = upgrade_status(b2.port, "other.example")
    t.ok("--allowed-host chat.example: another Host is refused", " 403 " in status + " ",
         status)
    b2.stop()


def replay_all(t, name, c, sid, want_ids):
    """Joins with since=0 and follows has_more/last_id until the whole history came."""
    got, since, rounds = [], 0, 0
    while True:
        j = c.join(sid, since=since, timeout=20)
        rounds += 1
        msgs = j.get("messages") or []
        got += [m["id"] for m in msgs]
        size = len(json.dumps(j, ensure_ascii=False).encode())
        t.ok("%s: round %d: a frame of at most 128 KiB + one message" % (name, rounds),
             size <= 128 * 1024 + 64 * 1024 + 1024, "%d bytes" % size)
        if not j.get("has_more"):
            t.ok("%s: the last round says has_more false and no last_id" % name,
                 j.get("has_more") is False and "last_id" not in j, repr(j)[:300])
            break
        t.eq("%s: round %d: last_id is the last message replayed" % (name, rounds),
             j.get("last_id"), msgs[-1]["id"] if msgs else None)
        since = j.get("last_id")
        if rounds > 100:
            break
    t.eq("%s: every message came, in order, once" % name, got, want_ids)
    t.ok("%s: the connection stayed open" % name, not c.closed and c.ping_ok(),
         "closed with %r" % c.close_code)
    return rounds


def test_replay(t, rest, b):
    sid = rest.new_session(title="long")
    ids = [rest.add_message(sid, ("%04d " % i) + "é" * 995)["id"] for i in range(400)]
    c = connect(b, "R")
    rounds = replay_all(t, "400 x 1 KB", c, sid, ids)
    t.ok("400 x 1 KB: split over several frames", rounds >= 3, "%d rounds" % rounds)
    sid2 = rest.new_session(title="big")
    ids2 = [rest.add_message(sid2, ("%02d " % i) + "w" * (60 * 1024 - 3))["id"]
            for i in range(12)]
    rounds = replay_all(t, "12 x 60 KiB", c, sid2, ids2)
    t.ok("12 x 60 KiB: split over several frames", rounds >= 6, "%d rounds" % rounds)
    # REST history pages are bounded by bytes too (4 MiB of content), has_more says so
    ids2 += [rest.add_message(sid2, ("%02d " % i) + "h" * (60 * 1024 - 3))["id"]
             for i in range(12, 80)]
    got, before, pages = [], None, 0
    while pages < 20:
        q = "/sessions/%s?limit=1000%s" % (sid2, "&before=%d" % before if before else "")
        page = rest.get(q, timeout=30).body
        msgs = page.get("messages") or []
        pages += 1
        size = sum(len(m["content"].encode()) for m in msgs)
        t.ok("REST page %d: at most 4 MiB of content" % pages, size <= 4 * 1024 * 1024,
             "%d bytes in %d messages" % (size, len(msgs)))
        got = [m["id"] for m in msgs] + got
        if not page.get("has_more"):
            break
        before = msgs[0]["id"]
    t.eq("80 x 60 KiB over REST: two pages", pages, 2)
    t.eq("80 x 60 KiB over REST: every message once, in order", got, ids2)
    # the whole 400 asked for again and again without reading: bounded, then culled
    c.close()


class RawMember:
    """A member on a plain socket: cheap enough for hundreds."""

    def __init__(self, port):
        self.sock, self.buf = ws_handshake(port, timeout=20)
        self.sock.setblocking(False)
        self.frames = []

    def send(self, obj):
        self.sock.setblocking(True)
        self.sock.sendall(ws_frame(0x1, json.dumps(obj).encode()))
        self.sock.setblocking(False)

    def pump(self):
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except BlockingIOError:
            pass
        while len(self.buf) >= 2:
            n, pos = self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, pos = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, pos = int.from_bytes(self.buf[2:10], "big"), 10
            if len(self.buf) < pos + n:
                break
            op, payload = self.buf[0] & 0x0F, self.buf[pos:pos + n]
            self.buf = self.buf[pos + n:]
            if op == 0x1:
                self.frames.append(json.loads(payload))

    def close(self):
        self.sock.close()


def pump_until(members, pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        socks = [m.sock for m in members]
        select.select(socks, [], [], 0.2)
        for m in members:
            m.pump()
        if pred():
            return True
    return False


def presence_frames(m):
    return [f for f in m.frames if f.get("type") == "session_update" and
            f.get("update_type") in ("user_joined", "user_left", "presence")]


def test_join_burst(t):
    n = 600
    b = Broker(t, flags={"--max-conns-per-ip": "2000"}, name="broker-burst")
    owner = connect(b, "owner")
    sid = owner.create_session()
    members = []
    started = time.monotonic()
    try:
        for i in range(n):
            m = RawMember(b.port)
            m.send({"type": "join_session", "session_id": sid})
            members.append(m)
            if i % 50 == 0:
                for x in members:
                    x.pump()
        joined = pump_until(members, lambda: all(
            any(f.get("type") == "session_joined" for f in m.frames) for m in members), 60)
        burst_s = time.monotonic() - started
        t.ok("%d joins: every one answered session_joined" % n, joined,
             "%d of %d" % (sum(1 for m in members if any(f.get("type") == "session_joined"
                                                          for f in m.frames)), n))
        # presence settles: everyone ends up told the final count
        final = pump_until(members + [], lambda: all(
            presence_frames(m) and presence_frames(m)[-1].get("clients") == n + 1
            for m in members[:-1]), 30)
        t.ok("after the burst every member was told clients = %d" % (n + 1), final,
             repr([presence_frames(m)[-1:] for m in members[:3]]))
        total = sum(len(presence_frames(m)) for m in members)
        per_member = max(len(presence_frames(m)) for m in members)
        windows = burst_s / 0.25 + 4
        t.diag("%d joins in %.1f s: %d presence frames in all, at most %d for one member"
               % (n, burst_s, total, per_member))
        t.ok("presence frames per member are bounded by the windows (<= 3 per 250 ms)",
             per_member <= 3 * windows, "%d > %d" % (per_member, 3 * windows))
        t.ok("a burst of N joins costs O(N) presence frames, not N^2/2",
             total < n * n / 8, "%d frames" % total)
        # the owner reads on its own thread: wait for the update rather than take what
        # has arrived so far
        try:
            ow = [owner.expect(timeout=10, type="session_update", update_type="presence")]
        except parley.ExpectError:
            ow = []
        ow += owner.take_all(type="session_update", update_type="presence")
        t.ok("the owner got coalesced presence updates with joined lists",
             ow and all(isinstance(f.get("joined"), list) and isinstance(f.get("left"), list)
                        for f in ow), repr(ow[:2])[:300])
        # chat flows to all of them
        owner.chat("after the burst")
        got = pump_until(members, lambda: all(
            any(f.get("update_type") == "message_added" for f in m.frames) for m in members),
            30)
        t.ok("a chat after the burst reaches all %d members" % n, got, "")
    finally:
        for m in members:
            m.close()
    owner.close()
    b.stop()


def test_lost_notifications(t):
    """REST pointed at a notification socket nobody listens on: every notification is
    lost, and the broker's reconcile still tells the members and answers."""
    b = Broker(t, name="broker-reconcile")
    r = Rest(t, tmpdir=b.tmpdir, flags={"--notify-socket": os.path.join(b.tmpdir, "nobody.sock")},
             name="rest-lost-notify")
    c = connect(b, "L")
    sid = c.create_session()
    t0 = time.monotonic()
    m = r.post("/sessions/%s/messages" % sid, {"content": "sent while the socket was gone"})
    t.eq("REST message stored: 201", m.status, 201)
    ev = c.expect(timeout=15, type="session_update", update_type="message_added",
                  pred=lambda f: f.get("message", {}).get("content") ==
                  "sent while the socket was gone")
    t.eq("the reconcile told the member the message REST could not announce",
         ev.get("message", {}).get("id"), m.body.get("id"))
    t.diag("told %.1f s after the REST answer" % (time.monotonic() - t0))
    r.post("/sessions/%s/messages" % sid, {"content": "answer me", "reply": True})
    c.expect(timeout=15, type="session_update", update_type="message_added",
             pred=lambda f: f.get("message", {}).get("content") == "answer me")
    done = c.expect(timeout=20, type="response_complete", session_id=sid)
    t.ok("the reconcile asked for the reply REST could not announce", done.get("message_id"),
         repr(done))
    time.sleep(2.5)  # another reconcile pass
    again = c.take_all(type="session_update", update_type="message_added")
    t.eq("nothing is told twice", again, [])
    c.close()
    r.stop()
    b.stop()


def test_revoke(t):
    r = Rest(t, name="rest-revoke")
    code, out, _ = run_cli("parley-rest", ["--db", r.db, "--notify-socket", r.notify_socket,
                                           "keys", "add", "carol"])
    key = out.strip()
    t.eq("keys add carol: exit 0", code, 0)
    _, lines = parley.sql(r.db, "select lookup from api_keys where name = 'carol';")
    t.eq("a new key is stored with its lookup: the 8 hex after pk_", lines, [key[3:11]])
    code, out, _ = run_cli("parley-rest", ["--db", r.db, "--notify-socket", r.notify_socket,
                                           "keys", "add", "old-dave"])
    dave = out.strip()
    parley.sql(r.db, "update api_keys set lookup = NULL where name = 'old-dave';")
    auth = {"Authorization": "Bearer " + key}
    t.eq("REST: a key with a lookup is accepted", r.get("/sessions", headers=auth).status, 200)
    t.eq("REST: a key made before lookups is accepted",
         r.get("/sessions", headers={"Authorization": "Bearer " + dave}).status, 200)
    t.eq("REST: a wrong key with a known lookup is refused",
         r.get("/sessions", headers={"Authorization": "Bearer " + key[:-1] +
                                     ("0" if key[-1] != "0" else "1")}).status, 401)
    b = Broker(t, tmpdir=r.tmpdir, port=r.ws_port, name="broker-revoke")
    old = connect(b, "D", headers={"Authorization": "Bearer " + dave})
    t.ok("broker: a key made before lookups is served", old.ping_ok(), "")
    old.close()
    c = connect(b, "K", headers={"Authorization": "Bearer " + key})
    t.ok("a connection with carol's key is served", c.ping_ok(), "")
    code, _, _ = run_cli("parley-rest", ["--db", r.db, "--notify-socket", r.notify_socket,
                                         "keys", "revoke", "carol"])
    t.eq("keys revoke carol: exit 0", code, 0)
    e = c.expect(timeout=15, type="error")
    t.eq("revoked: the live connection is told unauthorized", e.get("code"), "unauthorized")
    c.wait_closed(10)
    t.eq("revoked: the live connection is closed with 1008", c.close_code, 1008)
    b.stop()
    r.stop()


def main(t):
    rest = Rest(t)
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port)
    with t.section("crash frame"):
        test_crash_frame(t, b)
    with t.section("bind"):
        test_bind(t, rest, b)
    with t.section("hosts"):
        test_hosts(t, b)
    with t.section("replay"):
        test_replay(t, rest, b)
    b.stop()
    rest.stop()
    with t.section("join burst"):
        test_join_burst(t)
    with t.section("lost notifications"):
        test_lost_notifications(t)
    with t.section("revoke"):
        test_revoke(t)


if __name__ == "__main__":
    parley.run(main)
