#!/usr/bin/python3
"""GET /ws on parley-rest (SPEC 4): the WebSocket upgrade relayed to the broker. Through
ws://127.0.0.1:RESTPORT/ws: connected, a session, a chat with the echo reply streamed,
ping/pong, a member on the broker's own port in the same session, /ws/{client_id}
(envelope), a message at --max-message-size both ways and one byte more (1009), a client
that stops reading (REST memory flat, closed by the broker), 200 connections at once, a
half-close and closes from either side, the per-IP limit applied by the broker to the
client's forwarded address (and its log naming that address; a client's own
X-Forwarded-For replaced), X-Forwarded-For from an untrusted peer ignored, a bad key
401, a disallowed Origin 403, the broker down (503 JSON), the broker not answering (503
after 10 s, REST answering meanwhile), GET /ws without an upgrade (400), GET / still
naming the broker's port, the CLI through the relay, a relayed connection silent for 35 s
(past REST's HTTP timeout), wss:// through an https parley-rest, SIGTERM with relayed
clients."""

import base64
import json
import os
import re
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import (Broker, Rest, check_error, check_reply, run_cli, ws_frame,  # noqa: E402
                    ws_handshake, ws_read_frame)

ROOMY = {"--rate-limit": "10000", "--rate-burst": "20000"}


def services(t, rest_flags=None, broker_flags=None, llm="echo"):
    rest = Rest(t, flags=rest_flags)
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm=llm,
               flags=dict(ROOMY, **(broker_flags or {})))
    return rest, b


def relay_url(rest, path="/ws"):
    return "ws://127.0.0.1:%d%s" % (rest.port, path)


def connect(url, name="ws", **kw):
    c = parley.WsClient(url, name=name, **kw)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def raw_status(port, path="/ws", headers=None, source=None, timeout=5):
    """A hand-made upgrade; returns (status, head bytes, body bytes, socket or None): the
    socket stays open on 101 (caller closes), else it is closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source:
        sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    parley.send_upgrade(sock, port, path, headers)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.match(rb"^HTTP/1\.[01] (\d{3})", head)
    status = int(m.group(1)) if m else None
    if status == 101:
        return status, head, body, sock
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    want = int(m.group(1)) if m else None
    while want is not None and len(body) < want and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    sock.close()
    return status, head, body, None


def close_raw(sock):
    try:
        sock.sendall(ws_frame(0x8, b"\x03\xe8"))
    except OSError:
        pass
    sock.close()


def broker_conns(rest):
    r = rest.get("/health")
    return (r.body.get("broker") or {}).get("connections") if isinstance(r.body, dict) else None


def poll(fn, want, seconds):
    deadline = time.monotonic() + seconds
    got = fn()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.1)
        got = fn()
    return got


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return None


def log_has(proc, regex, seconds=5):
    deadline = time.monotonic() + seconds
    while True:
        with open(proc.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if re.search(regex, text, re.M):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


# ---------------------------------------------------------------- sections

def test_chat(t, rest, b):
    a = parley.WsClient(relay_url(rest, "/ws?name=Ann"), name="relay-A")
    ev = a.expect(type="connected")
    t.keys("relay: connected has exactly type, connection_id, message, server_info", ev,
           {"type", "connection_id", "message", "server_info"})
    t.eq("relay: connected.server_info", ev.get("server_info"),
         {"name": "parley", "version": ev.get("server_info", {}).get("version"),
          "model": "echo", "auth_required": False})
    a.id = ev.get("connection_id")
    sid = a.create_session()
    t.match("relay: session_created", sid, parley.SESSION_ID_RE)
    d = connect(b.url, "direct-B")
    joined = d.join(sid)
    t.eq("direct member sees the relayed one in members",
         sorted(m.get("name") for m in joined.get("members", [])), ["Ann", "guest-" + d.id[:4]])
    ack = a.chat("hello through the relay")
    t.eq("relay: chat acknowledged with its author (?name= passed on)",
         (ack.get("message") or {}).get("author"), {"name": "Ann", "connection_id": a.id})
    check_reply(t, "relay: echo reply streamed", a.read_reply(sid), sid,
                text="hello through the relay")
    seen = d.expect(type="session_update", update_type="message_added")
    t.eq("direct member gets the relayed chat", (seen.get("message") or {}).get("content"),
         "hello through the relay")
    check_reply(t, "direct member watches the same reply", d.read_reply(sid), sid,
                text="hello through the relay")
    d.chat("and back")
    got = a.expect(type="session_update", update_type="message_added",
                   pred=lambda m: (m.get("message") or {}).get("content") == "and back")
    t.eq("relay: a direct member's chat reaches the relayed one",
         got["message"]["author"]["connection_id"], d.id)
    for i in range(3):
        pong = a.request({"type": "ping"}, type="pong")
        t.match("relay: ping %d -> pong with a timestamp" % i, pong.get("timestamp"), parley.TS_RE)
    a.close()
    d.close()
    # other paths under /ws are the broker's to answer: the same answer as on its port
    for path in ("/ws/agent-7", "/ws?dialect=envelope"):
        st_relay = raw_status(rest.port, path)
        st_direct = raw_status(b.port, path)
        for r in (st_relay, st_direct):
            if r[3]:
                close_raw(r[3])
        t.eq("relay %s: the broker's own answer (%s)" % (path, st_direct[0]), st_relay[0],
             st_direct[0])


def test_large(t, rest, b):
    limit = 65536
    a = connect(relay_url(rest), "big")
    sid = a.create_session()
    base = len(json.dumps({"type": "chat", "message": ""}).encode())
    text = "y" * (limit - base)
    ack = a.chat(text, timeout=10)
    t.eq("relay: a chat of exactly --max-message-size is stored and acknowledged whole",
         len((ack.get("message") or {}).get("content", "")), limit - base)
    frames = a.read_reply(sid, timeout=20)
    t.eq("relay: its echo streams back whole",
         "".join(f.get("text", "") for f in frames if f.get("type") == "chunk"), text)
    a.send(json.dumps({"type": "chat", "message": "y" * (limit - base + 1)}))
    a.wait_closed(timeout=10)
    t.eq("relay: one byte more closes 1009", a.close_code, 1009)


def test_slow_reader(t):
    """A relayed member that stops reading while a sender fills the session."""
    rest, b = services(t, llm="none")
    sender = connect(b.url, "sender")
    sid = sender.create_session()
    status, _, _, slow = raw_status(rest.port, "/ws")
    t.eq("slow reader: upgraded", status, 101)
    if not slow:
        return
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(ws_frame(0x1, json.dumps({"type": "join_session",
                                           "session_id": sid}).encode()))
    time.sleep(0.5)  # joined; from here on it never reads
    t.eq("slow reader: the broker counts both", poll(lambda: broker_conns(rest), 2, 5), 2)
    before = rss_kb(rest.popen.pid)
    payload = "z" * 1000
    closed_by_broker = False
    for i in range(40):  # up to 2,000 chats of 1 KB, 50 at a time, each batch acknowledged
        for k in range(50):
            sender.send({"type": "chat", "message": "%d %s" % (i * 50 + k, payload)})
        last = "%d %s" % (i * 50 + 49, payload)
        sender.expect(timeout=10, type="session_update", update_type="message_added",
                      pred=lambda m: (m.get("message") or {}).get("content") == last)
        sender.clear()
        if broker_conns(rest) == 1:
            closed_by_broker = True
            break
    grew = rss_kb(rest.popen.pid) - before
    t.ok("slow reader: REST memory stays flat (< 4 MB more)", grew < 4096, "grew %d kB" % grew)
    if not closed_by_broker:
        closed_by_broker = poll(lambda: broker_conns(rest), 1, 10) == 1
    t.ok("slow reader: the broker closes the member that stopped reading (after %d chats)"
         % ((i + 1) * 50), closed_by_broker, "connections %r" % broker_conns(rest))
    slow.close()
    fresh = connect(relay_url(rest))
    t.ok("slow reader: REST still relays a new client", fresh.ping_ok())
    t.ok("slow reader: the sender kept its connection", sender.ping_ok())
    fresh.close()
    sender.close()
    b.stop()
    rest.stop()


def test_many(t, rest, b):
    n = 200
    socks, bufs = [], []
    failed = 0
    for i in range(n):
        try:
            status, _, extra, s = raw_status(rest.port, "/ws", timeout=15)
        except OSError:
            status, s = None, None
        if status != 101:
            failed += 1
            continue
        socks.append(s)
        bufs.append(extra)
    t.eq("200 relayed connections at once: all upgraded", failed, 0)
    t.eq("the broker counts all 200", poll(lambda: broker_conns(rest), n, 5), n)
    for s in socks:
        s.sendall(ws_frame(0x1, b'{"type":"ping"}'))
    pongs = 0
    deadline = time.monotonic() + 15
    for i, s in enumerate(socks):
        buf = bufs[i]
        seen = set()
        try:
            while "pong" not in seen:
                op, payload, buf = ws_read_frame(s, buf, deadline)
                if op is None:
                    break
                if op == 0x1:
                    seen.add(json.loads(payload).get("type"))
        except (socket.timeout, OSError):
            pass
        pongs += "pong" in seen and "connected" in seen
    t.eq("each of the 200 got connected and its pong", pongs, n)
    for s in socks:
        close_raw(s)
    t.eq("all 200 closed: the broker holds none within 5 s",
         poll(lambda: broker_conns(rest), 0, 5), 0)


def test_closes(t, rest, b):
    # the client closes: the broker's side goes too
    a = connect(relay_url(rest), "closer")
    t.eq("one relayed connection counted", poll(lambda: broker_conns(rest), 1, 5), 1)
    a.abort()
    t.eq("client gone (TCP closed without a close frame): the broker's side closes",
         poll(lambda: broker_conns(rest), 0, 5), 0)
    # a half-close from the client passes on: the broker ends its side, the client sees EOF
    status, _, extra, s = raw_status(rest.port, "/ws")
    t.eq("half-close: upgraded", status, 101)
    if s:
        s.shutdown(socket.SHUT_WR)
        buf, op = extra, 0x1
        deadline = time.monotonic() + 10
        try:
            while op is not None:
                op, _, buf = ws_read_frame(s, buf, deadline)
        except (socket.timeout, OSError):
            op = "timeout"
        t.eq("half-close: the client's end of stream reaches the broker, which closes; "
             "EOF reaches the client", op, None)
        s.close()
    # the broker closes: the close frame and the end reach the client
    c = connect(relay_url(rest), "closed")
    c.send(b"\x00" * 70000)
    c.wait_closed(timeout=10)
    t.eq("broker closes (1009): the close code reaches the relayed client", c.close_code, 1009)
    t.eq("and the broker holds nothing", poll(lambda: broker_conns(rest), 0, 5), 0)


def test_per_ip(t):
    rest, b = services(t, broker_flags={"--max-conns-per-ip": "3"}, llm="none")
    held = []
    for i in range(3):
        st, _, _, s = raw_status(rest.port, "/ws", source="127.0.0.2")
        held.append(s)
        t.eq("per-IP: relayed connection %d from 127.0.0.2 upgraded" % (i + 1), st, 101)
    st, head, _, _ = raw_status(rest.port, "/ws", source="127.0.0.2")
    t.eq("per-IP: the 4th from 127.0.0.2 through REST is refused 429 by the broker", st, 429)
    t.ok("per-IP: the broker's log names the client's address, not REST's",
         log_has(b, r"refused 127\.0\.0\.2: too many connections from the address"),
         b.log_tail(5))
    t.ok("per-IP: each relayed connection logged with the client's address",
         log_has(b, r"connection [0-9a-f]{12} from 127\.0\.0\.2$"), b.log_tail(5))
    st, _, _, s = raw_status(rest.port, "/ws", source="127.0.0.3",
                             headers={"X-Forwarded-For": "127.0.0.2"})
    t.eq("per-IP: another address is not counted with it (even claiming to be it)", st, 101)
    held.append(s)
    t.ok("per-IP: a client's own X-Forwarded-For is replaced by its address",
         log_has(b, r"connection [0-9a-f]{12} from 127\.0\.0\.3$"), b.log_tail(5))
    for s in held:
        if s:
            close_raw(s)
    deadline = time.monotonic() + 5  # the broker sees the closes a moment later
    while True:
        st, _, _, s = raw_status(rest.port, "/ws", source="127.0.0.2")
        if st != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    t.eq("per-IP: a freed slot is usable again (within 5 s)", st, 101)
    if s:
        close_raw(s)
    # directly on the broker from loopback (trusted by default): its header counts
    direct = []
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.1"):
        st, _, _, s = raw_status(b.port, "/ws", headers={"X-Forwarded-For": ip})
        direct.append((st, s))
    t.eq("trusted peer (loopback): its X-Forwarded-For is the address counted",
         [st for st, _ in direct], [101, 101, 101, 429])
    for _, s in direct:
        if s:
            close_raw(s)
    rest.stop()
    b.stop()


def test_untrusted(t):
    """A peer that is not a trusted proxy: its X-Forwarded-For is ignored."""
    b = Broker(t, llm="none", flags=dict(ROOMY, **{"--max-conns-per-ip": "2",
                                                   "--trusted-proxy": "192.0.2.1"}))
    got = []
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        st, _, _, s = raw_status(b.port, "/ws", headers={"X-Forwarded-For": ip})
        got.append((st, s))
    t.eq("untrusted peer: spoofed X-Forwarded-For ignored, its own address counted (3rd 429)",
         [st for st, _ in got], [101, 101, 429])
    t.ok("untrusted peer: the log names the peer, not the claimed address",
         log_has(b, r"refused 127\.0\.0\.1: too many connections") and
         not log_has(b, r"198\.51\.100", 0), b.log_tail(5))
    for _, s in got:
        if s:
            close_raw(s)
    b.stop()


def test_refusals(t):
    rest = Rest(t, start=False)
    code, out, err = run_cli("parley-rest", ["--db", rest.db, "keys", "add", "ops"])
    t.eq("keys add: exit 0", code, 0)
    key = out.strip().split()[-1] if out.strip() else ""
    rest.start()
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none", flags=ROOMY)
    st, head, body, _ = raw_status(rest.port, "/ws?api_key=not-the-key")
    t.eq("bad key through the relay: 401 from the broker", st, 401)
    st, _, _, s = raw_status(rest.port, "/ws", headers={"Authorization": "Bearer " + key})
    t.eq("good key (Bearer) through the relay: 101", st, 101)
    if s:
        close_raw(s)
    c = connect(relay_url(rest, "/ws?api_key=" + key))
    t.eq("good key (?api_key=) through the relay: served", c.ping_ok(), True)
    c.close()
    st, _, _, _ = raw_status(rest.port, "/ws?api_key=" + key,
                             headers={"Origin": "http://evil.example"})
    t.eq("disallowed Origin through the relay: 403 from the broker", st, 403)
    st, _, _, s = raw_status(rest.port, "/ws?api_key=" + key,
                             headers={"Origin": "http://127.0.0.1:%d" % rest.port})
    t.eq("the REST page's own Origin through the relay: 101", st, 101)
    if s:
        close_raw(s)
    b.stop()
    rest.stop()


def test_broker_down(t):
    rest = Rest(t)  # its --ws-port names a free port: no broker there
    st, head, body, _ = raw_status(rest.port, "/ws")
    try:
        body = json.loads(body)
    except ValueError:
        pass
    check_error(t, "broker down", (st, {"content-type": "application/json"
                                        if b"application/json" in head else ""}, body),
                503, "unavailable", "parley-broker")
    t.eq("broker down: REST itself still answers", rest.get("/health").status, 200)
    r = rest.get("/ws")
    check_error(t, "GET /ws without an upgrade", r, 400, "bad_request", "WebSocket")
    root = rest.get("/")
    t.eq("GET / ws_url still names the broker's own port", root.body.get("ws_url"),
         "ws://127.0.0.1:%d/ws" % rest.ws_port)
    # a broker that accepts but never answers (stopped): 503 after 10 s, REST answering
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none")
    os.kill(b.popen.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", rest.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n" % (rest.port, key)).encode())
        time.sleep(0.5)
        h = rest.get("/health", timeout=5)
        t.eq("broker hung: REST answers other requests meanwhile", h.status, 200)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        took = time.monotonic() - t0
        sock.close()
        t.ok("broker hung: the upgrade is answered 503", data.startswith(b"HTTP/1.1 503"),
             repr(data[:80]))
        t.ok("broker hung: after about 10 s (9 to 25)", 9 <= took <= 25, "%.1f s" % took)
    finally:
        os.kill(b.popen.pid, signal.SIGCONT)
    b.stop()
    rest.stop()


def test_cli(t, rest, b):
    env = {"PARLEY_REST_URL": "http://127.0.0.1:%d" % rest.port}
    code, out, err = run_cli("parley", ["--url", relay_url(rest), "send", "via", "the", "relay"],
                             env=env, timeout=30)
    t.eq("CLI through the relay: exit 0", code, 0)
    t.eq("CLI through the relay: the echo reply", out, "via the relay\n")


def test_sigterm(t):
    rest, b = services(t, llm="none")
    clients = [connect(relay_url(rest), "term-%d" % i) for i in range(3)]
    rest.stop()  # reports exit 0
    closed = 0
    for c in clients:
        try:
            c.wait_closed(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        closed += c.closed
    t.eq("REST SIGTERM: its relayed clients are closed", closed, 3)
    t.ok("the broker keeps running", b.alive())
    b.stop()


def test_tls(t):
    """parley-rest on https (--tls-cert): wss://HOST:RESTPORT/ws relayed to a plain broker
    on loopback (MHD hands the upgraded stream over a socket pair)."""
    import deploy
    tmp = parley.make_tmpdir()
    cert, key, ctx = deploy.self_signed_cert(tmp)
    b = Broker(t, tmpdir=tmp, llm="echo", flags=ROOMY)
    rest = deploy.TlsRest(t, ctx, cert, key, tmpdir=tmp, ws_port=b.port)
    c = parley.WsClient("wss://127.0.0.1:%d/ws" % rest.port, name="wss", ssl=ctx)
    c.expect(type="connected")
    sid = c.create_session()
    c.chat("over wss through the relay")
    check_reply(t, "wss relay: echo reply streamed", c.read_reply(sid), sid,
                text="over wss through the relay")
    t.ok("wss relay: ping answered", c.ping_ok())
    c.close()
    rest.stop()
    b.stop()


def main(t):
    rest, b = services(t)
    # held silent past REST's 30 s HTTP connection timeout, checked after the sections below
    # (on a pair of its own, so that the connection counts below are exact)
    irest, ib = services(t, llm="none", broker_flags={"--ping-interval": "3600",
                                                            "--idle-timeout": "7200"})
    idle = connect(relay_url(irest), "idle")
    idle_since = time.monotonic()
    for name, fn in (("chat through the relay", test_chat), ("large messages", test_large),
                     ("many connections", test_many), ("closes", test_closes),
                     ("the CLI", test_cli)):
        with t.section(name):
            fn(t, rest, b)
        for c in list(parley._clients):
            if c is not idle and not c.closed:
                c.close(timeout=2)
    b.stop()
    rest.stop()
    for name, fn in (("a client that stops reading", test_slow_reader),
                     ("per-IP limit", test_per_ip), ("untrusted proxy", test_untrusted),
                     ("refusals", test_refusals), ("broker down", test_broker_down),
                     ("https REST", test_tls),
                     ("SIGTERM", test_sigterm)):
        with t.section(name):
            fn(t)
        for c in list(parley._clients):
            if c is not idle and not c.closed:
                c.close(timeout=2)
    with t.section("an idle relayed connection"):
        time.sleep(max(0.0, 35 - (time.monotonic() - idle_since)))
        t.ok("silent for 35 s (past REST's 30 s HTTP timeout): still relayed", idle.ping_ok())
    parley.close_clients()
    ib.stop()
    irest.stop()


parley.run(main)
