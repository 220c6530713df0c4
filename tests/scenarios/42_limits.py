"""Broker limits (SPEC 6, docs/envelope-decisions.md), each at its boundary and the
connection or process healthy afterwards: --max-message-size (at the limit passes, one byte
more closes 1009, whole and fragmented), --max-conns-per-ip (N ok, N+1 refused 429, a slot
freed is reusable), --rate-limit/--rate-burst (burst answered, the next is rate_limited,
served again after a second; a flood closes 1008 while others keep working),
--allowed-origin (403) and the default origins, other paths (404), and refusals logged
once per address and reason. (--ping-interval/--idle-timeout: 25_broker_keepalive.py.)"""

import json
import os
import re
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, ws_frame, ws_handshake, ws_read_frame  # noqa: E402

LIMIT = 2048
ROOMY = {"--rate-limit": "1000", "--rate-burst": "2000"}


def connect(b, name, **kw):
    c = b.client(name, **kw)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def raw_upgrade(port, path="/ws", headers=None, timeout=5):
    """A hand-made upgrade request; returns the HTTP status (101 on success)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        parley.send_upgrade(sock, port, path, headers)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in buf and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        m = re.match(rb"^HTTP/1\.[01] (\d{3})", buf)
        if m and m.group(1) == b"101":
            try:
                sock.sendall(ws_frame(0x8, b"\x03\xe8"))
            except OSError:
                pass
        return int(m.group(1)) if m else None
    finally:
        sock.close()


def chat_frame(size):
    base = len(json.dumps({"type": "chat", "message": ""}).encode())
    s = json.dumps({"type": "chat", "message": "y" * (size - base)})
    assert len(s.encode()) == size
    return s


def test_size(t):
    b = Broker(t, name="broker-size", llm="none",
               flags=dict(ROOMY, **{"--max-message-size": str(LIMIT)}))
    for frag in (False, True):
        how = "fragmented" if frag else "one frame"
        c = connect(b, "C")
        sid = c.create_session()
        s = chat_frame(LIMIT)
        if frag:
            c.send_fragments([s[i:i + 300] for i in range(0, len(s), 300)])
        else:
            c.send(s)
        try:
            ack = c.expect(type="session_update", update_type="message_added")
            t.eq("message of exactly --max-message-size (%s): accepted" % how,
                 len(ack["message"]["content"]), LIMIT - len('{"type": "chat", "message": ""}'))
        except parley.ExpectError as e:
            t.fail("message of exactly --max-message-size (%s): accepted" % how, str(e))
        t.ok("at the limit (%s): connection healthy" % how, c.ping_ok(), "no pong")
        s = chat_frame(LIMIT + 1)
        if frag:
            c.send_fragments([s[i:i + 300] for i in range(0, len(s), 300)])
        else:
            c.send(s)
        t.eq("--max-message-size + 1 (%s): close 1009" % how, c.wait_closed(5), 1009)
        t.eq("--max-message-size + 1 (%s): not stored" % how,
             parley.sql(b.db, "select count(*) from messages where session_id='%s';" % sid)[1],
             ["1"])
    d = connect(b, "D")
    t.ok("after 1009 closes the broker serves new connections", d.ping_ok(), "no pong")
    d.close()
    b.stop()


def wait_status(port, want, timeout=3.0, **kw):
    deadline = time.monotonic() + timeout
    while True:
        st = raw_upgrade(port, **kw)
        if st == want or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def connect_when_free(b, name, timeout=10.0):
    """connect(), retried while the broker still counts a connection that was just closed
    (the readiness probe's, a raw upgrade's): its close is processed a moment later, more
    under ASan on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(b, name)
        except Exception:  # noqa: BLE001 - refused with 429 while the old one is counted
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_conns(t):
    n = 3
    b = Broker(t, name="broker-conns", llm="none",
               flags=dict(ROOMY, **{"--max-conns-per-ip": str(n)}))
    held = []
    for i in range(n):
        try:
            held.append(connect_when_free(b, "H%d" % i))
        except Exception as e:  # noqa: BLE001
            t.fail("connection %d of %d accepted" % (i + 1, n), "%s: %s" % (type(e).__name__, e))
    t.eq("--max-conns-per-ip %d: %d connections accepted" % (n, n), len(held), n)
    t.eq("connection %d: upgrade refused with 429" % (n + 1), raw_upgrade(b.port), 429)
    t.ok("held connections keep working", all(c.ping_ok() for c in held), "no pong")
    held.pop().close()
    t.eq("after closing one, a new connection is accepted", wait_status(b.port, 101, 10.0),
         101)
    held.append(connect_when_free(b, "again"))
    t.eq("and the limit holds again", raw_upgrade(b.port), 429)
    # over-limit upgrades from the same address 20 more times: one log line
    codes = [raw_upgrade(b.port) for _ in range(20)]
    t.eq("20 more over-limit upgrades: all 429", codes, [429] * 20)
    time.sleep(0.3)
    with open(b.log_path, "rb") as f:
        log = f.read().decode("utf-8", "replace").splitlines()
    lines = [l for l in log if "refused" in l and "too many connections" in l]
    t.eq("22 refusals for too many connections: exactly one 'refused' log line", len(lines), 1)
    for c in held:
        c.close()
    b.stop()


def read_texts(sock, buf, count, timeout=10.0):
    """Reads server frames until `count` text frames or a close; returns (texts, close code
    or None, buf)."""
    texts = []
    deadline = time.monotonic() + timeout
    while len(texts) < count:
        try:
            op, payload, buf = ws_read_frame(sock, buf, deadline)
        except socket.timeout:
            return texts, None, buf
        if op is None:
            return texts, "eof", buf
        if op == 0x1:
            texts.append(json.loads(payload.decode()))
        elif op == 0x8:
            return texts, int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None, buf
        elif op == 0x9:
            sock.sendall(ws_frame(0xA, payload))
    return texts, None, buf


def kinds(texts):
    return [m.get("code") if m.get("type") == "error" else m.get("type") for m in texts]


def test_rate(t):
    b = Broker(t, name="broker-rate", llm="none",
               flags={"--rate-limit": "5", "--rate-burst": "10"})
    sock, buf = ws_handshake(b.port)
    texts, _, buf = read_texts(sock, buf, 1)
    t.eq("rate: connected first", kinds(texts), ["connected"])
    ping = ws_frame(0x1, b'{"type":"ping"}')
    sock.sendall(ping * 11)
    texts, code, buf = read_texts(sock, buf, 11)
    t.eq("--rate-burst 10: 10 quick pings answered, the 11th gets rate_limited",
         kinds(texts), ["pong"] * 10 + ["rate_limited"])
    if len(texts) == 11:
        t.ok("rate_limited error: exactly type, code, message",
             set(texts[10]) == {"type", "code", "message"}, repr(texts[10]))
    texts, code, buf = read_texts(sock, buf, 1, timeout=0.5)
    t.eq("nothing more after the rate_limited error", kinds(texts), [])
    time.sleep(1.2)
    sock.sendall(ping)
    texts, code, buf = read_texts(sock, buf, 1)
    t.eq("after waiting 1 s, messages are served again", kinds(texts), ["pong"])
    sock.sendall(ping * 3)
    texts, code, buf = read_texts(sock, buf, 3)
    t.eq("a few more within the refilled tokens: served", kinds(texts), ["pong"] * 3)
    sock.close()

    # a flood: 60 at once with --rate-burst 10 ends with 1008; others keep working
    other = connect(b, "other")
    fs, fbuf = ws_handshake(b.port)
    texts, _, fbuf = read_texts(fs, fbuf, 1)
    fs.sendall(ping * 60)
    texts, code, fbuf = read_texts(fs, fbuf, 100, timeout=10)
    t.eq("flood of 60: close code 1008", code, 1008)
    t.eq("flood of 60: 10 pongs, rate_limited for the 1st and 10th refused, then the close",
         kinds(texts), ["pong"] * 10 + ["rate_limited"] * 2)
    fs.close()
    t.ok("another connection keeps working after the flood", other.ping_ok(), "no pong")
    d = connect(b, "D")
    t.ok("a new connection is served after the flood", d.ping_ok(), "no pong")
    other.close()
    d.close()
    b.stop()


def test_origins(t):
    b = Broker(t, name="broker-origin", llm="none",
               flags=dict(ROOMY, **{"--allowed-origin": "https://good.example"}))
    t.eq("--allowed-origin: Origin https://good.example -> 101",
         raw_upgrade(b.port, headers={"Origin": "https://good.example"}), 101)
    t.eq("--allowed-origin: Origin https://evil.example -> 403",
         raw_upgrade(b.port, headers={"Origin": "https://evil.example"}), 403)
    t.eq("--allowed-origin: loopback origin not listed -> 403",
         raw_upgrade(b.port, headers={"Origin": "http://127.0.0.1:1234"}), 403)
    t.eq("--allowed-origin: no Origin -> 101", raw_upgrade(b.port), 101)
    c = connect(b, "C", origin="https://good.example")
    t.ok("allowed origin: the connection works", c.ping_ok(), "no pong")
    c.close()
    for _ in range(20):
        raw_upgrade(b.port, headers={"Origin": "https://evil.example"})
    time.sleep(0.3)
    with open(b.log_path, "rb") as f:
        log = f.read().decode("utf-8", "replace").splitlines()
    lines = [l for l in log if "refused" in l and "origin" in l.lower()]
    t.eq("21 refused origins from one address: exactly one 'refused' log line", len(lines), 1)
    b.stop()

    b = Broker(t, name="broker-default-origin", llm="none", flags=ROOMY)
    for origin in ("http://127.0.0.1:1234", "http://localhost", "http://localhost:8080",
                   "http://[::1]:3000"):
        t.eq("default origins: %s -> 101" % origin,
             raw_upgrade(b.port, headers={"Origin": origin}), 101)
    for origin in ("https://evil.example", "http://localhost.evil.example",
                   "http://127.0.0.1.evil.example", "null"):
        t.eq("default origins: %s -> 403" % origin,
             raw_upgrade(b.port, headers={"Origin": origin}), 403)
    t.eq("default origins: no Origin -> 101", raw_upgrade(b.port), 101)
    for path in ("/other", "/", "/wsx", "/ws2/x"):
        t.eq("path %s -> 404" % path, raw_upgrade(b.port, path=path), 404)
    # /ws/{client_id} chooses the envelope dialect (SPEC 3.3): a bad client_id is 400
    t.eq("path /ws/x (a client_id) -> 101", raw_upgrade(b.port, path="/ws/x"), 101)
    for path in ("/ws/x/y", "/ws/a%20b"):
        t.eq("path %s (not a client_id) -> 400" % path, raw_upgrade(b.port, path=path), 400)
    t.eq("path /ws?x=1 (a query) -> 101", raw_upgrade(b.port, path="/ws?x=1"), 101)
    c = connect(b, "C")
    t.ok("after the refusals the broker serves", c.ping_ok(), "no pong")
    c.close()
    b.stop()


def main(t):
    with t.section("size"):
        test_size(t)
    with t.section("conns"):
        test_conns(t)
    with t.section("rate"):
        test_rate(t)
    with t.section("origins"):
        test_origins(t)
    parley.close_clients()


parley.run(main)
