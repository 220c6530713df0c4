#!/usr/bin/python3
"""relay_takeover: how long an orphaned reply waits for another broker (SPEC 8: "If that
broker dies, another broker finishes the job within 5 s").

Usage: relay_takeover.py --port1 P --pid1 PID --port2 P --pid2 PID --pg-dir DIR --db NAME
                         [--node1 b1] [--node2 b2] [--words 600] [--after 1.0]
                         [--timeout 30] [--assume-owner NODE]

Two brokers started with --llm echo (20 ms a word) over one database: a member on each
(A on the first broker creates the session, B on the second joins it); A sends a chat of
--words words. The broker generating the reply is read from the reply lease (`select owner
from reply_queue where message_id = N`, N the chat's id), and once the reply has streamed
--after seconds to the member on the other broker, the owner is killed with SIGKILL (by its
pid: both brokers were started by relay_bench.sh). The figure: the time from the kill until
the member on the surviving broker gets `response_complete` with `interrupted: true`; then
whether a new reply to the same message starts (response_start) and when.

--assume-owner NODE skips the lease look-up (for trying the scenario on a build without
the lease: there no broker takes over, and the figure is "none within --timeout").

Standard library only; raw WebSocket frames (tests/lib/parley.py's helpers). A benchmark,
not a test: it prints `takeover: ...` lines, and exits non-zero only when it could not
run (a broker that does not answer, no lease owner found).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from parley import ws_frame, ws_handshake, ws_read_frame  # noqa: E402


def say(msg):
    print("takeover: %s" % msg, flush=True)


class Member:
    """One WebSocket connection; a thread reads every frame into (monotonic time, JSON)."""

    def __init__(self, name, port):
        self.name = name
        self.sock, self.buf = ws_handshake(port, timeout=10)
        self.frames = []
        self.cond = threading.Condition()
        self.closed_at = None
        self.wlock = threading.Lock()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        while True:
            try:
                op, payload, self.buf = ws_read_frame(self.sock, self.buf,
                                                      time.monotonic() + 3600)
            except (OSError, ValueError):
                op = None
            now = time.monotonic()
            if op is None or op == 8:
                with self.cond:
                    self.closed_at = now
                    self.cond.notify_all()
                return
            if op == 9:
                self.raw(ws_frame(10, payload))
                continue
            if op != 1:
                continue
            try:
                msg = json.loads(payload)
            except ValueError:
                continue
            with self.cond:
                self.frames.append((now, msg))
                self.cond.notify_all()

    def raw(self, data):
        try:
            with self.wlock:
                self.sock.sendall(data)
        except OSError:
            pass

    def send(self, obj):
        self.raw(ws_frame(1, json.dumps(obj).encode()))

    def wait(self, pred, timeout, start=0):
        """The first (index, time, frame) from frames[start:] that pred accepts, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.frames)):
                    t, m = self.frames[i]
                    if pred(m):
                        return i, t, m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed_at is not None:
                    return None
                self.cond.wait(left)


def is_type(kind, **fields):
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


def owner_of(args, message_id):
    """The lease owner of the reply to message_id (polled up to 5 s), or None."""
    q = "select owner from reply_queue where message_id = %d" % message_id
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        p = subprocess.run([sys.executable, os.path.join(HERE, "relay_pg.py"), "sql",
                            args.pg_dir, args.db, q], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        out = p.stdout.decode("utf-8", "replace").strip()
        if p.returncode != 0:
            say("could not read the lease: %s" % (out + p.stderr.decode()).strip()[:300])
            return None
        if out:
            return out.splitlines()[0]
        time.sleep(0.05)
    return None


def main():
    ap = argparse.ArgumentParser()
    for k in ("port1", "pid1", "port2", "pid2"):
        ap.add_argument("--" + k, type=int, required=True)
    ap.add_argument("--node1", default="b1")
    ap.add_argument("--node2", default="b2")
    ap.add_argument("--pg-dir", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--words", type=int, default=600)
    ap.add_argument("--after", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--assume-owner")
    args = ap.parse_args()

    a = Member("A@" + args.node1, args.port1)
    b = Member("B@" + args.node2, args.port2)
    if not a.wait(is_type("connected"), 10) or not b.wait(is_type("connected"), 10):
        say("cannot run: no connected event")
        return 1
    a.send({"type": "create_session", "title": "takeover"})
    got = a.wait(is_type("session_created"), 10)
    if not got:
        say("cannot run: no session_created")
        return 1
    sid = got[2]["session_id"]
    b.send({"type": "join_session", "session_id": sid})
    if not b.wait(is_type("session_joined"), 10):
        say("cannot run: B could not join")
        return 1
    text = " ".join("w%d" % i for i in range(args.words))
    a.send({"type": "chat", "message": text})
    got = a.wait(lambda m: m.get("type") == "session_update" and
                 m.get("update_type") == "message_added" and
                 (m.get("message") or {}).get("content") == text, 10)
    if not got:
        say("cannot run: the chat was not acknowledged")
        return 1
    mid = got[2]["message"]["id"]
    owner = args.assume_owner or owner_of(args, mid)
    nodes = {args.node1: (args.pid1, b), args.node2: (args.pid2, a)}
    if owner not in nodes:
        say("cannot run: the reply's owner is %r, neither %s nor %s" % (owner, args.node1,
                                                                         args.node2))
        return 1
    pid, survivor = nodes[owner]
    say("message %d, %d words; reply owned by %s%s (pid %d); watched from %s" % (
        mid, args.words, owner, " (assumed)" if args.assume_owner else "", pid, survivor.name))
    first = survivor.wait(is_type("chunk", session_id=sid), 10)
    if not first:
        say("cannot run: no chunk reached %s within 10 s" % survivor.name)
        return 1
    time.sleep(max(0.0, first[1] + args.after - time.monotonic()))
    with survivor.cond:
        seen = len(survivor.frames)
        chunks = sum(1 for _, m in survivor.frames if m.get("type") == "chunk")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    say("kill -9 %s after %.2f s of streaming (%d chunks seen by %s)" % (
        owner, killed - first[1], chunks, survivor.name))
    done = survivor.wait(is_type("response_complete", session_id=sid, interrupted=True),
                         args.timeout, seen)
    if not done:
        say("no response_complete with interrupted: true reached %s within %.0f s" % (
            survivor.name, args.timeout))
        print("takeover-seconds: none")
        return 0
    say("response_complete interrupted reached %s %.3f s after the kill (%s chunks "
        "before it)" % (survivor.name, done[1] - killed, done[2].get("total_chunks")))
    again = survivor.wait(is_type("response_start", session_id=sid), 10, done[0] + 1)
    if again:
        say("a new reply started %.3f s after the kill" % (again[1] - killed))
    else:
        say("no new reply started within 10 s of the interruption")
    print("takeover-seconds: %.3f" % (done[1] - killed))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        say("cannot run: %s" % e)
        sys.exit(1)
