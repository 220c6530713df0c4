"""A throwaway redis-server for tests (SPEC 8), and a tiny RESP client: standard library
only. The server listens on a free loopback port with no persistence, in the test's temp
dir, and is stopped by its pid (SIGKILL: a crash, as a test of "Redis is down" wants)."""

import os
import signal
import socket
import subprocess
import time

import parley

REDIS_SERVER = "/usr/bin/redis-server"
WAIT = 30.0  # seconds to come up: a wide margin for a loaded machine


class Redis:
    """A throwaway redis-server on a free loopback port (no persistence), stopped by pid."""

    def __init__(self, tmpdir, port=None):
        self.tmpdir = tmpdir
        self.port = port or parley.free_port()
        self.popen = None
        self.start()

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        log = open(os.path.join(self.tmpdir, "redis.log"), "ab")
        try:
            self.popen = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.tmpdir],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer on port %d" % self.port)

    def stop(self):
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def command(self, *args):
        """One command; returns the reply (str, int, or list), raises OSError on no link."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(resp_command(args))
            return resp_read(s.makefile("rb"))


def resp_command(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def resp_read(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return "ERR:" + rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode("utf-8", "replace")
    if kind == b"*":
        return [resp_read(f) for _ in range(int(rest))]
    raise OSError("bad RESP reply %r" % line)
