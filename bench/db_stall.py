#!/usr/bin/python3
"""db_stall: clients flood chats into parley-broker while a sqlite3 shell holds the
database's write lock (BEGIN IMMEDIATE) for --hold seconds: how the flood is answered
(stored, unavailable, rate_limited) and how the broker's VmRSS grows.

Usage: db_stall.py --port P --db FILE --broker-pid PID [--clients 1] [--hold 10]
                   [--size 200] [--rate 0]

Standard library only; raw WebSocket frames (tests/lib/parley.py's helpers). Each client
sends --rate chats/s (0: as fast as its socket takes frames) for the --hold seconds the
lock is held; then the
shell commits and the script waits (up to 60 s) for every chat to be answered. A benchmark,
not a test: it prints figures and exits non-zero only when it could not run.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from parley import ws_handshake, ws_read_frame  # noqa: E402


def frame(payload):
    """A masked text frame with an all-zero mask (the payload is sent as it is: cheap)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return -1


class Client:
    def __init__(self, port, i):
        self.i = i
        self.sock, self.buf = ws_handshake(port, timeout=10)
        self.sent = 0
        self.stored = self.unavailable = self.rate_limited = self.other = 0
        self.closed = False
        self.lock = threading.Lock()
        self.tag = ('"content":"c%d-' % i).encode()

    def read_json(self, want, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            op, payload, self.buf = ws_read_frame(self.sock, self.buf, deadline)
            if op is None:
                raise RuntimeError("client %d: closed while waiting for %s" % (self.i, want))
            if op == 1:
                m = json.loads(payload)
                if m.get("type") == want:
                    return m

    def send(self, obj):
        self.sock.sendall(frame(json.dumps(obj).encode()))

    def reader(self):
        deadline = time.monotonic() + 3600
        while True:
            try:
                op, payload, self.buf = ws_read_frame(self.sock, self.buf, deadline)
            except OSError:
                op = None
            if op is None or op == 8:
                self.closed = True
                return
            if op != 1:
                continue
            with self.lock:
                if b'"message_added"' in payload:
                    if self.tag in payload:
                        self.stored += 1
                elif b'"code":"unavailable"' in payload:
                    self.unavailable += 1
                elif b'"code":"rate_limited"' in payload:
                    self.rate_limited += 1
                elif b'"type":"error"' in payload:
                    self.other += 1

    def answered(self):
        with self.lock:
            return self.stored + self.unavailable + self.rate_limited + self.other


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--broker-pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--rate", type=float, default=0.0, help="chats/s per client (0: no pause)")
    a = ap.parse_args()

    clients = [Client(a.port, i) for i in range(a.clients)]
    for c in clients:
        c.read_json("connected")
    clients[0].send({"type": "create_session"})
    sid = clients[0].read_json("session_created")["session_id"]
    for c in clients:
        c.send({"type": "join_session", "session_id": sid})
        c.read_json("session_joined")
        c.sock.settimeout(None)
    readers = [threading.Thread(target=c.reader, daemon=True) for c in clients]
    for r in readers:
        r.start()

    base = rss_kb(a.broker_pid)
    peak = [base]
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            peak[0] = max(peak[0], rss_kb(a.broker_pid))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    shell = subprocess.Popen(["/usr/bin/sqlite3", "-batch", a.db], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shell.stdin.write(b"BEGIN IMMEDIATE;\nSELECT 'held';\n")
    shell.stdin.flush()
    if shell.stdout.readline().strip() != b"held":
        print("db_stall: the sqlite3 shell could not take the write lock", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    until = t0 + a.hold
    pad = "z" * max(0, a.size - 24)

    def flood(c):
        n = 0
        try:
            while time.monotonic() < until and not c.closed:
                if a.rate > 0 and n >= a.rate * (time.monotonic() - t0):
                    time.sleep(0.005)
                    continue
                batch = b"".join(frame(('{"type":"chat","message":"c%d-%d %s"}' % (
                    c.i, n + k, pad)).encode()) for k in range(100))
                c.sock.sendall(batch)
                n += 100
        except OSError:
            pass
        c.sent = n
    senders = [threading.Thread(target=flood, args=(c,)) for c in clients]
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    shell.stdin.write(b"COMMIT;\n.quit\n")
    shell.stdin.close()
    shell.wait(10)
    held = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            not c.closed and c.answered() < c.sent for c in clients):
        time.sleep(0.1)
    stop_sampling.set()
    sampler.join()
    sent = sum(c.sent for c in clients)
    stored = sum(c.stored for c in clients)
    unav = sum(c.unavailable for c in clients)
    rl = sum(c.rate_limited for c in clients)
    other = sum(c.other for c in clients)
    culled = sum(1 for c in clients if c.closed)
    print("db_stall: %d client(s) sent %d chats of %d bytes (%s) while the write lock was "
          "held %.1f s" % (a.clients, sent, a.size, "%g/s each" % a.rate if a.rate > 0
                           else "as fast as possible", held))
    print("db_stall: answered: %d stored, %d unavailable, %d rate_limited, %d other errors, "
          "%d unanswered; connections closed by the broker: %d of %d" % (
              stored, unav, rl, other, sent - stored - unav - rl - other, culled, a.clients))
    print("db_stall: broker VmRSS kB: before %d peak %d growth %d" % (base, peak[0],
                                                                       peak[0] - base))
    for c in clients:
        try:
            c.sock.close()
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
