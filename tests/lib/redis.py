"""A throwaway Redis server for a test, and a small RESP client (SPEC 8). Standard library
only, /usr/bin/python3; Debian's redis-server 7.0.

    r = redis.RedisServer()                  # 127.0.0.1, a free port, temp dir
    r = redis.RedisServer(bind=topo.addr("data"), port=6379,
                          runner=lambda argv, **kw: topo.run("data", argv, **kw))
    r.start()                                # returns once it answers PING
    r.url                                    # "redis://ADDR:PORT" for --redis
    c = r.client()                           # RespClient on its Unix socket
    c.command("SET", "k", "v"); c.get("k"); c.keys("*"); c.publish("ch", "hi")
    sub = r.client(); sub.subscribe("ch"); sub.read_message(timeout=5)
                                             # ("message", "ch", "hi") or None
    r.pause(5)                               # stopped, 5 s later started again, same port
    r.freeze(); r.thaw()                     # SIGSTOP / SIGCONT: a server that hangs
    r.stop()                                 # SIGTERM (kill=True: SIGKILL), by pid

The server: `--port PORT --bind ADDR --save '' --appendonly no` (nothing persisted: a
restart comes back empty, as a cache would), `--protected-mode no` only when it binds an
address other than loopback (a test namespace's: no password there), a Unix socket in its
temp dir (the test reaches it from any namespace: sockets on the filesystem are not
bound to network namespaces), `--daemonize no`; its log is `redis-<port>.log` in log_dir
(default its temp dir; the scenario passes tests/output/...). It runs in a session of its
own (process group) and is stopped by that pid only.

runner(argv, **popen_kwargs) -> Popen starts it, e.g. inside a topology host
(tests/lib/netns.py); the default is subprocess.Popen with start_new_session.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    """An error reply (-ERR ...) from the server."""


class _Incomplete(Exception):
    pass


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode("utf-8")
        else:
            b = str(a).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespClient:
    """One connection speaking RESP2: command(*args) returns the reply (simple string as
    str, integer as int, bulk string as str (decode=True, UTF-8) or bytes, nil as None,
    array as list); an error reply raises RedisError. After subscribe()/psubscribe() the
    connection only reads pushed messages (read_message)."""

    def __init__(self, host=None, port=None, unix=None, sock=None, timeout=5.0, decode=True):
        if sock is None:
            if unix:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(unix)
                except OSError:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout)
        self.sock = sock
        self.timeout = timeout
        self.decode = decode
        self._buf = b""
        self.subscribed = False

    # ---- parsing
    def _line(self, pos):
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete()
        return self._buf[pos:end], end + 2

    def _parse(self, pos):
        if pos >= len(self._buf):
            raise _Incomplete()
        kind = self._buf[pos:pos + 1]
        line, pos = self._line(pos + 1)
        if kind == b"+":
            return line.decode("utf-8", "replace"), pos
        if kind == b"-":
            return RedisError(line.decode("utf-8", "replace")), pos
        if kind == b":":
            return int(line), pos
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None, pos
            if len(self._buf) < pos + n + 2:
                raise _Incomplete()
            data = self._buf[pos:pos + n]
            return (data.decode("utf-8", "surrogateescape") if self.decode else data), pos + n + 2
        if kind == b"*":
            n = int(line)
            if n < 0:
                return None, pos
            items = []
            for _ in range(n):
                v, pos = self._parse(pos)
                items.append(v)
            return items, pos
        raise RedisError("unexpected RESP type %r" % kind)

    def _read_reply(self, timeout):
        """The next reply (an error reply as a RedisError value); socket.timeout when
        none is complete within timeout (what arrived stays buffered)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value, pos = self._parse(0)
                self._buf = self._buf[pos:]
                return value
            except _Incomplete:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no complete reply within %.1f s" % timeout)
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self._buf += chunk

    # ---- commands
    def command(self, *args, timeout=None):
        if self.subscribed and args[0].upper() not in ("SUBSCRIBE", "PSUBSCRIBE",
                                                       "UNSUBSCRIBE", "PUNSUBSCRIBE", "PING"):
            raise RedisError("connection is in subscribe mode")
        self.sock.sendall(_encode(args))
        v = self._read_reply(self.timeout if timeout is None else timeout)
        if isinstance(v, RedisError):
            raise v
        return v

    def ping(self):
        return self.command("PING") == "PONG"

    def get(self, key):
        return self.command("GET", key)

    def keys(self, pattern="*"):
        return sorted(self.command("KEYS", pattern))

    def publish(self, channel, message):
        """PUBLISH: the number of subscribers that got it."""
        return self.command("PUBLISH", channel, message)

    def _sub(self, verb, names):
        self.sock.sendall(_encode([verb] + list(names)))
        self.subscribed = True
        for _ in names:  # one confirmation per name
            v = self._read_reply(self.timeout)
            if isinstance(v, RedisError):
                raise v
            if not (isinstance(v, list) and v and str(v[0]).lower() == verb.lower()):
                raise RedisError("%s: unexpected answer %r" % (verb, v))

    def subscribe(self, *channels):
        self._sub("SUBSCRIBE", channels)

    def psubscribe(self, *patterns):
        self._sub("PSUBSCRIBE", patterns)

    def read_message(self, timeout=5.0):
        """The next pushed message: ("message", channel, data) or ("pmessage", channel,
        data, pattern); None when none arrives within timeout."""
        try:
            v = self._read_reply(timeout)
        except socket.timeout:
            return None
        if isinstance(v, list) and v and v[0] == "message" and len(v) == 3:
            return ("message", v[1], v[2])
        if isinstance(v, list) and v and v[0] == "pmessage" and len(v) == 4:
            return ("pmessage", v[2], v[3], v[1])
        if isinstance(v, RedisError):
            raise v
        return tuple(v) if isinstance(v, list) else v

    def messages(self, seconds):
        """Every message pushed within the next `seconds` seconds, in order."""
        out = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            m = self.read_message(left)
            if m is None:
                return out
            out.append(m)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _default_runner(argv, **popen_kwargs):
    popen_kwargs["start_new_session"] = True
    return subprocess.Popen(argv, **popen_kwargs)


def _loopback(addr):
    return addr.startswith("127.") or addr in ("::1", "localhost")


class RedisServer:
    def __init__(self, port=None, bind="127.0.0.1", tmpdir=None, log_dir=None, runner=None,
                 extra_args=(), ready_timeout=20.0):
        if port is None:
            if not _loopback(bind):
                raise ValueError("a port is needed for bind address %s" % bind)
            import parley
            port = parley.free_port()
        self.port = int(port)
        self.bind = bind
        self.owned_dir = tmpdir is None
        self.dir = tmpdir or tempfile.mkdtemp(prefix="parley-redis-")
        self.log_dir = log_dir or self.dir
        os.makedirs(self.log_dir, exist_ok=True)
        self.log_path = os.path.join(self.log_dir, "redis-%d.log" % self.port)
        self.unix = os.path.join(self.dir, "redis.sock")
        self.runner = runner or _default_runner
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.popen = None
        self.returncode = None
        self.starts = 0

    @property
    def url(self):
        return "redis://%s:%d" % (self.bind, self.port)

    def argv(self):
        a = [REDIS_SERVER, "--port", str(self.port), "--bind", self.bind, "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", self.log_path,
             "--daemonize", "no", "--unixsocket", self.unix, "--unixsocketperm", "700",
             "--loglevel", "notice"]
        if not _loopback(self.bind):
            a += ["--protected-mode", "no"]
        return a + self.extra_args

    def start(self):
        """Starts the server (again, on the same port); returns once it answers PING."""
        if self.alive():
            raise RuntimeError("redis-server already running (pid %d)" % self.popen.pid)
        with open(self.log_path, "ab") as log:
            log.write(b"--- start %d (tests/lib/redis.py)\n" % (self.starts + 1))
            log.flush()
            self.popen = self.runner(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log)
        self.starts += 1
        self.returncode = None
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError("redis-server exited with %s; log:\n%s" % (
                    self.popen.returncode, self.log_tail()))
            try:
                with RespClient(unix=self.unix, timeout=2) as c:
                    if c.ping():
                        return self
            except (OSError, RedisError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("redis-server not ready within %.0f s (%s); log:\n%s" % (
            self.ready_timeout, last, self.log_tail()))

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def stop(self, kill=False, timeout=10.0):
        """SIGTERM (kill: SIGKILL) to the pid we started, SIGKILL after timeout; waits.
        Returns the exit status (0 after a clean SIGTERM)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.thaw()
            try:
                self.popen.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.returncode = self.popen.returncode
        return self.returncode

    def pause(self, seconds, kill=False):
        """Redis down for `seconds` (stopped: clients see their connections close and new
        ones refused), then started again on the same port. Returns (exit status of the
        stop, seconds it was really down)."""
        t0 = time.monotonic()
        code = self.stop(kill=kill)
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        self.start()
        return code, time.monotonic() - t0

    def freeze(self):
        """SIGSTOP: the server keeps its connections but answers nothing (until thaw)."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGSTOP)

    def thaw(self):
        if self.alive():
            os.kill(self.popen.pid, signal.SIGCONT)

    def client(self, connect=None, timeout=5.0, decode=True):
        """A RespClient: on the Unix socket, or with connect(addr, port, timeout) -> socket
        over TCP (e.g. Topology.connector(host): from a namespace to self.bind)."""
        if connect is None:
            return RespClient(unix=self.unix, timeout=timeout, decode=decode)
        return RespClient(sock=connect(self.bind, self.port, timeout), timeout=timeout,
                          decode=decode)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError as e:
            return "(no log: %s)" % e

    def destroy(self):
        """Stops it and removes its temp dir (when it made it)."""
        self.stop()
        if self.owned_dir and not os.environ.get("PARLEY_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)
