"""A bounded fuzz run (fixed seed, printed; about 20 s; loopback only): random and mutated
WebSocket frames of both dialects (fields deleted, retyped, huge, unicode, nested; random
bytes as text and binary; truncated JSON; nesting 10000 deep; fragments) over several
connections against a running broker, and random and mutated HTTP requests (methods,
escaped paths, headers, bodies, wrong Content-Length, chunked garbage) against a running
parley-rest. Afterwards: both alive and answering, no 5xx seen, the history made before
the fuzz unchanged, a fresh WebSocket chat works, and both exit 0 on SIGTERM (under ASan:
no leaks). PARLEY_FUZZ_SEED overrides the seed."""

import json
import os
import random
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, ws_frame, ws_handshake  # noqa: E402

SEED = int(os.environ.get("PARLEY_FUZZ_SEED", "20260120"))
WS_SECONDS = 8.0
HTTP_SECONDS = 7.0
N_CONNS = 4

FLAT = [
    {"type": "create_session", "title": "t", "model_id": "m"},
    {"type": "join_session", "session_id": "0123456789abcdef", "since": 0},
    {"type": "leave_session", "session_id": "0123456789abcdef"},
    {"type": "chat", "message": "hello fuzz", "client_msg_id": "c1"},
    {"type": "stop"}, {"type": "typing_start"}, {"type": "typing_stop"}, {"type": "ping"},
]
ENV = [
    {"type": "auth", "data": {"api_key": "pk_x"}},
    {"type": "subscribe", "channel": None, "data": {"channel": "fz"}},
    {"type": "unsubscribe", "channel": None, "data": {"channel": "fz"}},
    {"type": "chat_message", "channel": "fz", "data": {"content": "hi", "thread_id": "t"}},
    {"type": "task_update", "channel": "fz", "data": {"task_id": "1", "status": "ok"}},
    {"type": "agent_status", "channel": None, "data": {"agent_id": "a", "status": "up"}},
    {"type": "llm_request", "channel": "fz", "data": {"content": "x y", "template": "t",
                                                      "metadata": {"a": 1}}},
    {"type": "ping", "timestamp": "2026-01-01T00:00:00.000Z", "client_id": "c", "channel": None,
     "data": {}},
]
WEIRD_STRINGS = ["", " ", "\u2713", "\u0000", "\ud83d\ude00", "\u202e", "é" * 50, "\\", "\"",
                 "%00", "../../etc/passwd", "fz", "0123456789abcdef", "_global",
                 "a" * 65, "\ufeff"]


def rnd_value(r, depth=0):
    k = r.randrange(11)
    if k == 0:
        return None
    if k == 1:
        return r.choice([True, False])
    if k == 2:
        return r.choice([0, -1, 1, 2 ** 63, -2 ** 63, 2 ** 64, 10 ** 30])
    if k == 3:
        return r.choice([1.5, -0.0, 1e308, 1e-308])
    if k == 4:
        return r.choice(WEIRD_STRINGS)
    if k == 5:
        return "".join(chr(r.randrange(1, 0x2FFF)) for _ in range(r.randrange(1, 40)))
    if k == 6 and depth < 4:
        return [rnd_value(r, depth + 1) for _ in range(r.randrange(4))]
    if k == 7 and depth < 4:
        return {r.choice(["type", "data", "channel", "message", "x"]): rnd_value(r, depth + 1)
                for _ in range(r.randrange(4))}
    if k == 8:
        return "w " * r.randrange(1, 30)
    if k == 9:
        return r.choice(["x" * r.randrange(1000, 20000), "ü" * r.randrange(100, 3000)])
    return r.choice(["chat", "ping", "subscribe", "auth", "create_session", "llm_request"])


def mutate(r, msg):
    msg = json.loads(json.dumps(msg))
    for _ in range(r.randrange(1, 4)):
        target = msg.get("data") if isinstance(msg.get("data"), dict) and r.random() < 0.5 \
            else msg
        keys = list(target)
        op = r.randrange(5)
        if op == 0 and keys:
            del target[r.choice(keys)]
        elif op == 1 and keys:
            target[r.choice(keys)] = rnd_value(r)
        elif op == 2:
            target[r.choice(["x", "type", "data", "session_id", "channel", "since"])] = \
                rnd_value(r)
        elif op == 3 and keys:
            k = r.choice(keys)
            target[k] = {"nested": [target[k], {"deeper": [target[k]]}]}
        elif op == 4:
            pass
    return msg


def ws_payload(r):
    """(opcode, payload bytes) of one fuzz message."""
    k = r.randrange(12)
    if k <= 4:
        msg = r.choice(FLAT + ENV)
        if k <= 3:
            msg = mutate(r, msg)
        return 0x1, json.dumps(msg, ensure_ascii=r.random() < 0.5).encode("utf-8",
                                                                          "surrogatepass")
    if k == 5:
        return 0x1, json.dumps(r.choice(FLAT + ENV)).encode()[:r.randrange(1, 30)]  # truncated
    if k == 6:
        return r.choice([0x1, 0x2]), os.urandom(r.randrange(0, 300))
    if k == 7:
        return 0x1, (r.choice(["[", '{"a":']) * 10000).encode() + b"1" + \
            r.choice([b"]", b"}"]) * r.choice([0, 10000])
    if k == 8:
        return 0x1, ('{"type":"chat","message":"%s"}' % ("z" * r.randrange(60000, 70000))).encode()
    if k == 9:
        return 0x1, r.choice([b"null", b"[]", b"1", b'"x"', b"{}", b'{"type":null}',
                              b'{"type":"\\ud800"}', b'{"type":"ping","type":"chat"}'])
    if k == 10:
        return 0x2, json.dumps(r.choice(FLAT)).encode()
    return 0x1, json.dumps({"type": "chat", "message": rnd_value(r),
                            "session_id": rnd_value(r)}).encode("utf-8", "surrogatepass")


class RawConn:
    def __init__(self, port):
        self.port = port
        self.sock = None
        self.opened = 0
        self.closed_by_server = 0

    def ensure(self):
        if self.sock is None:
            self.sock, _ = ws_handshake(self.port, timeout=5)
            self.sock.setblocking(False)
            self.opened += 1

    def drain(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionResetError("closed")
        except (BlockingIOError, InterruptedError):
            return

    def send(self, data):
        self.sock.setblocking(True)
        self.sock.settimeout(3)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def drop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.closed_by_server += 1


def fuzz_ws(t, b, r):
    conns = [RawConn(b.port) for _ in range(N_CONNS)]
    sent = 0
    deadline = time.monotonic() + WS_SECONDS
    while time.monotonic() < deadline:
        c = r.choice(conns)
        try:
            c.ensure()
            c.drain()
            op, payload = ws_payload(r)
            how = r.randrange(10)
            if how == 0 and len(payload) > 2:  # fragmented
                cut = r.randrange(1, len(payload))
                c.send(ws_frame(op, payload[:cut], fin=False) + ws_frame(0x0, payload[cut:]))
            elif how == 1:  # a control frame in the middle, or a bogus opcode
                c.send(ws_frame(r.choice([0x9, 0xA, 0x3, 0xB]), payload[:r.randrange(0, 126)]))
            elif how == 2:  # raw garbage on the socket
                c.send(os.urandom(r.randrange(1, 64)))
            else:
                c.send(ws_frame(op, payload))
            sent += 1
        except (OSError, ValueError, ConnectionResetError):
            c.drop()
    for c in conns:
        if c.sock is not None:
            try:
                c.drain()
            except (OSError, ConnectionResetError):
                pass
            c.drop()
    t.diag("ws fuzz: %d messages over %d connections (%d opened)" % (
        sent, N_CONNS, sum(c.opened for c in conns)))
    return sent


METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW", "get",
           "G\x00T", "POST /x"]
PATHS = ["/", "/health", "/stats", "/metrics", "/sessions", "/sessions/new",
         "/sessions/0123456789abcdef", "/sessions/0123456789abcdef/messages",
         "/sessions/0123456789abcdef/clear", "/sessions/0123456789abcdef/export?format=markdown",
         "/sessions/%2e%2e/%2e%2e/etc/passwd", "/%00", "/sessions/%ff%fe", "/demo", "/docs",
         "/..%2f..%2fetc/passwd", "/sessions?limit=-1&offset=x", "/sessions?limit=99999999999",
         "/sessions/0123456789abcdef/messages?q=%22%00*", "//", "/sessions/" + "a" * 5000,
         "/sessions?" + "a=b&" * 500, "*", "http://x/health", "/health#frag", "/%"]


def http_request(r):
    k = r.randrange(8)
    method = r.choice(METHODS) if r.random() < 0.3 else r.choice(["GET", "POST", "DELETE"])
    path = r.choice(PATHS)
    if r.random() < 0.2:
        path += "".join(r.choice("%/?&=.#\\ab~\x7f") for _ in range(r.randrange(1, 20)))
    headers = [("Host", "127.0.0.1")]
    body = b""
    if k <= 3:
        body = json.dumps(mutate(r, r.choice([{"title": "t", "model_id": "m"},
                                              {"content": "c", "reply": False}])),
                          ensure_ascii=False).encode("utf-8", "surrogatepass")
        headers.append(("Content-Type", r.choice(["application/json", "text/plain",
                                                  "application/json; charset=utf-8", ""])))
        headers.append(("Content-Length", str(len(body))))
    elif k == 4:  # wrong Content-Length
        body = os.urandom(r.randrange(0, 100))
        headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", r.choice(["-1", "abc", "99999999999999999999",
                                                    str(len(body) + 10), "0", " 5"])))
    elif k == 5:  # chunked garbage
        headers.append(("Content-Type", "application/json"))
        headers.append(("Transfer-Encoding", "chunked"))
        body = r.choice([b"zz\r\nxx\r\n0\r\n\r\n", b"5\r\n{\"a\":\r\n0\r\n\r\n",
                         b"ffffffffffffffff\r\n", b"3\r\nabc\r\n", os.urandom(40)])
    elif k == 6:  # random headers
        for _ in range(r.randrange(1, 8)):
            headers.append((r.choice(["Authorization", "X-" + "h" * r.randrange(1, 300),
                                      "Content-Type", "Accept", "Cookie", "Range"]),
                            r.choice(["Bearer", "Bearer " + "k" * 300, "\x01\x02", "",
                                      "bytes=0-0", "a" * 8000])))
    else:  # a large body
        body = b'{"title":"' + b"t" * r.randrange(60000, 70000) + b'"}'
        headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", str(len(body))))
    version = r.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/9.9", ""])
    head = "%s %s %s\r\n" % (method, path, version) + "".join("%s: %s\r\n" % h for h in headers)
    return head.encode("latin-1", "replace") + b"\r\n" + body


def fuzz_http(t, rest, r):
    statuses = {}
    fivexx = []
    n = 0
    deadline = time.monotonic() + HTTP_SECONDS
    while time.monotonic() < deadline:
        raw = http_request(r) if r.random() < 0.95 else os.urandom(r.randrange(1, 200))
        n += 1
        try:
            s = socket.create_connection(("127.0.0.1", rest.port), timeout=2)
        except OSError as e:
            fivexx.append(("connect", str(e)))
            continue
        try:
            s.sendall(raw)
            s.settimeout(0.5)
            buf = b""
            while b"\r\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            buf = b""
        finally:
            s.close()
        line = buf.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        if len(parts) >= 2 and parts[1].isdigit():
            st = int(parts[1])
            statuses[st] = statuses.get(st, 0) + 1
            # 505 is the one right answer to a request line with another HTTP version
            odd_version = not raw.split(b"\r\n", 1)[0].endswith((b" HTTP/1.1", b" HTTP/1.0"))
            if st >= 500 and not (st == 505 and odd_version):
                fivexx.append((st, raw[:200]))
    t.diag("http fuzz: %d requests; statuses %r" % (n, sorted(statuses.items())))
    return fivexx


def main(t):
    t.diag("fuzz seed %d (set PARLEY_FUZZ_SEED to replay)" % SEED)
    r = random.Random(SEED)
    rest = Rest(t)
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, flags={"--rate-limit": "500",
                                                                "--rate-burst": "1000"})
    sid = rest.new_session(title="before the fuzz")
    for text in ("first ✓", "second", "third"):
        rest.add_message(sid, text)
    before = rest.get("/sessions/%s" % sid)
    t.eq("history made before the fuzz: 3 messages", len(before.body.get("messages", [])), 3)

    with t.section("ws fuzz"):
        fuzz_ws(t, b, r)
    with t.section("http fuzz"):
        fivexx = fuzz_http(t, rest, r)
        t.eq("no HTTP 5xx (nor refused connections) during the fuzz", fivexx[:5], [])
    # some random bytes at the broker's HTTP side too
    for _ in range(20):
        try:
            s = socket.create_connection(("127.0.0.1", b.port), timeout=2)
            s.sendall(http_request(r) if r.random() < 0.5 else os.urandom(r.randrange(1, 300)))
            s.close()
        except OSError:
            pass

    t.ok("parley-broker still running", b.alive(), "exited %r" % (b.popen.poll(),))
    t.ok("parley-rest still running", rest.alive(), "exited %r" % (rest.popen.poll(),))
    h = rest.get("/health")
    t.eq("GET /health after the fuzz: 200", h.status, 200)
    t.eq("GET /health: broker up", h.body.get("broker", {}).get("up") if isinstance(h.body, dict)
         else None, True)
    with t.section("fresh chat"):
        c = b.client("fresh")
        c.expect(type="connected")
        fsid = c.create_session()
        ack = c.chat("after the fuzz")
        t.eq("a fresh WebSocket chat works", ack["message"]["content"], "after the fuzz")
        c.read_reply(fsid)
        c.close()
    after = rest.get("/sessions/%s" % sid)
    t.eq("history intact: GET /sessions/{id} unchanged",
         {k: v for k, v in after.body.items() if k != "clients"},
         {k: v for k, v in before.body.items() if k != "clients"})
    parley.close_clients()
    b.stop()
    rest.stop()


parley.run(main)
