"""Broker keepalive: with --ping-interval 1 --idle-timeout 3, a client that answers the
broker's WebSocket pings stays connected, and a client that completed the handshake but
never answers (a raw socket) is pinged, then disconnected after about 3 s."""

import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, ws_frame, ws_handshake, ws_read_frame  # noqa: E402


def raw_silent_client(port, result):
    """Handshake, then only read: records when pings come and when the broker hangs up."""
    sock, buf = ws_handshake(port)
    t0 = time.monotonic()
    result.update(pings=[], texts=[], end=None, how=None)
    deadline = t0 + 15
    try:
        while True:
            try:
                op, payload, buf = ws_read_frame(sock, buf, deadline)
            except (socket.timeout, TimeoutError):
                result["how"] = "still open after 15 s"
                return
            except OSError as e:  # reset by the peer counts as a hang-up
                result["end"], result["how"] = time.monotonic() - t0, "error %s" % e
                return
            if op is None:
                result["end"], result["how"] = time.monotonic() - t0, "EOF"
                return
            if op == 0x9:
                result["pings"].append(round(time.monotonic() - t0, 2))
            elif op == 0x1:
                result["texts"].append(payload.decode("utf-8", "replace"))
            elif op == 0x8:
                result["end"] = time.monotonic() - t0
                result["how"] = "close frame %r" % payload[:2]
                return
    finally:
        sock.close()


def test_keepalive(t, b):
    good = b.client("answers-pings")
    good.expect(type="connected")
    t_good = time.monotonic()
    raw = {}
    th = threading.Thread(target=raw_silent_client, args=(b.port, raw), daemon=True)
    th.start()
    th.join(20)
    t.diag("silent raw client: %r" % raw)
    t.ok("silent raw client: got the connected message", len(raw.get("texts", [])) >= 1 and
         '"connected"' in raw["texts"][0], repr(raw))
    t.ok("silent raw client: the broker pinged it", len(raw.get("pings", [])) >= 1, repr(raw))
    pings = raw.get("pings") or [None]
    t.ok("silent raw client: first ping after about 1 s (0.5-3 s)",
         pings[0] is not None and 0.5 <= pings[0] <= 3, repr(raw))
    end = raw.get("end")
    t.ok("silent raw client: disconnected after about 3 s (2-7 s)",
         end is not None and 2 <= end <= 7, repr(raw))
    left = 5.5 - (time.monotonic() - t_good)
    if left > 0:
        time.sleep(left)
    t.ok("a client that answers pings is still connected after 5 s", not good.closed,
         "closed with %r after %.1f s" % (good.close_code, (good.closed_at or 0) - t_good))
    t.ok("that client still gets answers", good.ping_ok(), "no pong")

    # a raw client that answers each ping with a pong stays too
    sock, buf = ws_handshake(b.port)
    t0 = time.monotonic()
    ponged = 0
    closed = None
    try:
        while time.monotonic() - t0 < 5:
            try:
                op, payload, buf = ws_read_frame(sock, buf, time.monotonic() + 0.5)
            except (socket.timeout, TimeoutError):
                continue
            if op is None or op == 0x8:
                closed = time.monotonic() - t0
                break
            if op == 0x9:
                sock.sendall(ws_frame(0xA, payload))
                ponged += 1
        t.ok("raw client answering pings: pinged, stays connected for 5 s",
             closed is None and ponged >= 1, "closed at %r, %d pongs" % (closed, ponged))
        sock.sendall(ws_frame(0x1, b'{"type":"ping"}'))
        op, payload, buf = ws_read_frame(sock, buf, time.monotonic() + 5)
        while op == 0x9:
            sock.sendall(ws_frame(0xA, payload))
            op, payload, buf = ws_read_frame(sock, buf, time.monotonic() + 5)
        t.ok("raw client answering pings: app ping answered", op == 0x1 and b'"pong"' in payload,
             "op %r payload %r" % (op, payload[:100]))
        sock.sendall(ws_frame(0x8, b"\x03\xe8"))
    finally:
        sock.close()
    good.close()


def main(t):
    b = Broker(t, llm="none", flags={"--ping-interval": "1", "--idle-timeout": "3"})
    with t.section("keepalive"):
        test_keepalive(t, b)
    parley.close_clients()
    b.stop()


parley.run(main)
