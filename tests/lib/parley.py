"""Helpers for Parley scenario tests: ports, a result reporter, process wrappers.

Scenario scripts print one line per test case, `ok - NAME` or `not ok - NAME: detail`,
or `ok - NAME # skip REASON` for a check that does not apply to this pass (counted as
skipped, not passed); any other line is a diagnostic (tests/run.py indents it). Processes
are started from PARLEY_BIN_DIR with a temporary database and stopped by pid only:
SIGTERM, up to 10 s, then SIGKILL. This module is standard library only and runs under
/usr/bin/python3.

The database: in an SQLite pass, tmpdir/parley.db; in a PostgreSQL pass (the runner sets
PARLEY_TEST_DB=postgresql and PARLEY_TEST_PG_HOST, tests/lib/pgcluster.py), a database of
the pass's cluster named after the tmpdir (db_for), so that a process restarted on the
same tmpdir finds the same history. `db` attributes are always what to pass to --db;
sql(db, query) reads it with the sqlite3 shell or psql, whichever db is.
"""

import atexit
import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import pgcluster

ROOT = os.environ.get("PARLEY_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.path.abspath(os.environ.get("PARLEY_BIN_DIR") or os.path.join(ROOT, "bin"))

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SESSION_ID_RE = re.compile(r"^[0-9a-f]{16}$")

# Ports the contract reserves for `make run`; tests never use them.
_RESERVED_PORTS = {8000, 8001}
_handed_out = set()

# Every process and temp dir this script started, for cleanup and failure logs.
_procs = []
_tmpdirs = []


# ---------------------------------------------------------------- ports

def free_port():
    """A loopback TCP port that is free now (never 8000/8001, never handed out twice)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _RESERVED_PORTS or port in _handed_out:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- reporter

def _one_line(s, limit=600):
    s = str(s).replace("\r", "\\r").replace("\n", "\\n")
    return s if len(s) <= limit else s[:limit] + "..."


def strict_equal(a, b):
    """== that also tells bool from int and int from float, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b


class Reporter:
    """Prints `ok - NAME` / `not ok - NAME: detail` lines; done() exits 1 on any failure."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self._names = {}

    def _name(self, name):
        name = _one_line(name, 200)
        n = self._names.get(name, 0) + 1
        self._names[name] = n
        return name if n == 1 else "%s #%d" % (name, n)

    def ok(self, name, cond, detail=""):
        name = self._name(name)
        if cond:
            self.passed += 1
            print("ok - %s" % name, flush=True)
        else:
            self.failed += 1
            print("not ok - %s: %s" % (name, _one_line(detail or "condition false")), flush=True)
        return bool(cond)

    def fail(self, name, detail):
        return self.ok(name, False, detail)

    def skip(self, name, reason):
        """A check that does not apply here: `ok - NAME # skip REASON`, which the runner
        counts as skipped (neither passed nor failed)."""
        name = self._name(name)
        self.skipped += 1
        print("ok - %s # skip %s" % (name, _one_line(reason, 300)), flush=True)

    def eq(self, name, got, want):
        """Exact equality, types included (True is not 1, 1 is not 1.0)."""
        return self.ok(name, strict_equal(got, want), "got %r, want %r" % (got, want))

    def match(self, name, got, regex):
        r = re.compile(regex) if isinstance(regex, str) else regex
        return self.ok(name, isinstance(got, str) and r.search(got) is not None,
                       "got %r, want match of /%s/" % (got, r.pattern))

    def keys(self, name, obj, want):
        """obj is a dict whose key set is exactly `want`."""
        if not isinstance(obj, dict):
            return self.fail(name, "not an object: %r" % (obj,))
        got = set(obj)
        want = set(want)
        return self.ok(name, got == want, "missing %s, unexpected %s (body %r)" % (
            sorted(want - got), sorted(got - want), obj))

    def is_int(self, name, v, minimum=None):
        good = type(v) is int and (minimum is None or v >= minimum)
        return self.ok(name, good, "got %r (%s), want int%s" % (
            v, type(v).__name__, "" if minimum is None else " >= %d" % minimum))

    def diag(self, msg):
        for line in str(msg).splitlines() or [""]:
            print("# " + line, flush=True)

    @contextlib.contextmanager
    def section(self, name):
        """Runs a block; an exception inside it is one `not ok` and the script goes on."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            self.fail(name + ": raised", "%s: %s" % (type(e).__name__, e))
            self.diag(traceback.format_exc())

    def done(self):
        if self.failed:
            # the logs of the processes that were running when something failed
            for p in _procs:
                if p.failed_at_stop is None or p.failed_at_stop > p.failed_at_start:
                    p.print_log_tail(self)
        self.diag("%d passed, %d failed%s" % (self.passed, self.failed,
                                              ", %d skipped" % self.skipped
                                              if self.skipped else ""))
        cleanup()
        sys.stdout.flush()
        sys.exit(1 if self.failed or not (self.passed or self.skipped) else 0)


def run(main):
    """Runs main(t) with a Reporter, reporting an escaped exception, then t.done()."""
    t = Reporter()
    try:
        main(t)
    except Exception as e:  # noqa: BLE001
        t.fail("scenario aborted", "%s: %s" % (type(e).__name__, e))
        t.diag(traceback.format_exc())
    t.done()


# ---------------------------------------------------------------- the pass's database

# What the pass runs on: "sqlite" (a file per tmpdir) or "postgresql" (a database per
# tmpdir on the cluster the runner started).
DB_KIND = "postgresql" if os.environ.get("PARLEY_TEST_DB") == "postgresql" else "sqlite"
PG = DB_KIND == "postgresql"
is_pg = pgcluster.is_pg_uri

_pg_lock = threading.Lock()
_pg_made = {}  # database name -> URI, made by this script (dropped by cleanup)
_pg_cluster = []


def pg_cluster():
    """The PostgreSQL pass's cluster (a pgcluster.Cluster that makes and queries
    databases; not ours to stop), None in an SQLite pass."""
    with _pg_lock:
        if not _pg_cluster:
            _pg_cluster.append(pgcluster.from_env() if PG else None)
        return _pg_cluster[0]


def pg_db_name(tmpdir, filename="parley.db"):
    """The database name for tmpdir (and a file name other than parley.db): short,
    lowercase, a valid identifier, the same every time for the same tmpdir."""
    key = os.path.realpath(tmpdir) + "\0" + filename
    base = os.path.basename(os.path.normpath(tmpdir)).lower()
    if base.startswith("parley-"):
        base = base[len("parley-"):]
    if filename != "parley.db":
        base += "_" + os.path.splitext(os.path.basename(filename))[0].lower()
    base = re.sub(r"[^a-z0-9]+", "_", base).strip("_")[-32:]
    return "t_%s_%s" % (base, hashlib.sha1(key.encode("utf-8")).hexdigest()[:8])


def db_for(tmpdir, filename="parley.db"):
    """What to pass to --db for a database in tmpdir: the file tmpdir/filename in an
    SQLite pass; in a PostgreSQL pass the URI of the database pg_db_name(tmpdir, filename)
    on the pass's cluster, created (afresh) the first time this script asks for it."""
    if not PG:
        return os.path.join(tmpdir, filename)
    cluster = pg_cluster()
    if cluster is None:
        raise RuntimeError("PARLEY_TEST_DB=postgresql but PARLEY_TEST_PG_HOST is not set "
                           "(run the PostgreSQL pass through tests/run.py --pass pg=bin)")
    name = pg_db_name(tmpdir, filename)
    with _pg_lock:
        if name not in _pg_made:
            _pg_made[name] = cluster.create_database(name, fresh=True)
        return _pg_made[name]


def given_db(flags, tmpdir):
    """What a process's --db is: flags' own --db when it names one, else db_for(tmpdir)."""
    db = (flags or {}).get("--db")
    return db if db is not None else db_for(tmpdir)


def drop_pg_databases():
    """Drops the databases db_for made (the processes using them are stopped)."""
    with _pg_lock:
        names = list(_pg_made)
        _pg_made.clear()
    if names and _pg_cluster and _pg_cluster[0] is not None:
        _pg_cluster[0].drop_databases(names)


# ---------------------------------------------------------------- processes

def _child_env(env):
    """The caller's environment without any PARLEY_* setting, plus `env`."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("PARLEY_") and k != "GENAI_MODEL_ID"}
    e.update({k: str(v) for k, v in (env or {}).items()})
    return e


def make_tmpdir(prefix="parley-test-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def _stop_pid(popen, timeout=10.0):
    """SIGTERM the process we started, wait up to timeout, then SIGKILL. Returns exit code."""
    if popen.poll() is not None:
        return popen.returncode
    try:
        popen.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait()


def cleanup():
    close_clients()
    for p in _procs:
        if p.popen is not None and p.popen.poll() is None:
            _stop_pid(p.popen)
    if not os.environ.get("PARLEY_KEEP_TMP"):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        drop_pg_databases()
    del _tmpdirs[:]


atexit.register(cleanup)


def run_cli(binary, args, env=None, timeout=10):
    """Runs bin/<binary> args to completion; returns (exit code, stdout str, stderr str)."""
    path = os.path.join(BIN_DIR, binary)
    p = subprocess.Popen([path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=_child_env(env), cwd=make_tmpdir())
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_pid(p)
        out, err = p.communicate()
        return None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


class Response(tuple):
    """(status, headers, body) with attribute access too."""

    @property
    def status(self):
        return self[0]

    @property
    def headers(self):
        return self[1]

    @property
    def body(self):
        return self[2]


def _decode_body(headers, data):
    ctype = headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() == "application/json":
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return data
    return data


def _headers_dict(resp):
    h = {}
    for k, v in resp.getheaders():
        k = k.lower()
        h[k] = v if k not in h else h[k] + ", " + v
    return h


class Rest:
    """A bin/parley-rest process on a free loopback port with a temporary database.

    flags: dict merged over the defaults (--db, --bind, --port, --notify-socket,
    --log-level, --ws-port); a value of None drops that flag. env: extra environment.
    tmpdir: reuse a directory (and its database), e.g. to restart on the same history.
    """

    def __init__(self, t, flags=None, env=None, tmpdir=None, port=None, ws_port=None,
                 name="parley-rest", start=True, ready_timeout=10.0):
        self.t = t
        self.name = name
        self.tmpdir = tmpdir or make_tmpdir()
        self.db = given_db(flags, self.tmpdir)  # what --db gets: a path or a URI
        self.notify_socket = os.path.join(self.tmpdir, "broker.sock")
        self.port = port or free_port()
        self.ws_port = ws_port or free_port()
        self.flags = {
            "--db": self.db,
            "--bind": "127.0.0.1",
            "--port": str(self.port),
            "--notify-socket": self.notify_socket,
            "--log-level": "debug",
            "--ws-port": str(self.ws_port),
        }
        self.flags.update(flags or {})
        self.env = env or {}
        self.argv_extra = []  # bare switches such as --insecure-no-auth
        self.popen = None
        self.returncode = None
        self.log_path = None
        self.ready_timeout = ready_timeout
        if start:
            self.start()

    def argv(self):
        argv = [os.path.join(BIN_DIR, "parley-rest")] + list(self.argv_extra)
        for k, v in self.flags.items():
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                for item in v:
                    argv += [k, str(item)]
            else:
                argv += [k, str(v)]
        return argv

    def start(self):
        n = sum(1 for p in _procs if p.tmpdir == self.tmpdir)
        self.log_path = os.path.join(self.tmpdir, "%s.%d.stderr" % (self.name, n))
        self.returncode = None
        self._tail_printed = False
        self.failed_at_start = self.t.failed if self.t is not None else 0
        self.failed_at_stop = None
        log = open(self.log_path, "wb")
        try:
            self.popen = self._spawn(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log,
                                     env=_child_env(self.env), cwd=self.tmpdir)
        finally:
            log.close()
        _procs.append(self)
        self.wait_ready()
        return self

    def _spawn(self, argv, **popen_kwargs):
        """Starts the process (a subclass may start it elsewhere, e.g. inside a network
        namespace: tests/lib/netns.py). Returns the Popen."""
        return subprocess.Popen(argv, **popen_kwargs)

    def _http(self, host, timeout):
        """The HTTP connection probe() and request() use: to host (default 127.0.0.1) on
        self.port (a subclass may make its socket elsewhere: tests/lib/netns.py)."""
        return http.client.HTTPConnection(host or "127.0.0.1", self.port, timeout=timeout)

    # errors of probe() that are not "not listening yet": raised at once
    fatal_probe_errors = ()

    def probe(self):
        """One readiness check: returns once the server answers, raises until then."""
        conn = self._http(None, 2)
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.close()

    def wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready; stderr:\n%s" % (
                    self.name, self.popen.returncode, self.log_tail()))
            try:
                self.probe()
                return
            except self.fatal_probe_errors:
                raise
            except (OSError, ValueError) as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError("%s not ready within %.0f s (%s); stderr:\n%s" % (
            self.name, self.ready_timeout, last, self.log_tail()))

    def request(self, method, path, body=None, headers=None, raw=None, timeout=10,
                host=None, decode=True):
        """One request on a fresh connection: (status, lowercased headers, JSON or bytes).

        body: a Python value sent as JSON with Content-Type application/json.
        raw: bytes sent as they are (Content-Type application/json unless headers
        sets Content-Type; a header value of None leaves it out).
        decode=False returns the body as bytes even when it is JSON.
        """
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        for k, v in (headers or {}).items():
            for existing in [x for x in hdrs if x.lower() == k.lower()]:
                del hdrs[existing]
            if v is not None:
                hdrs[k] = v
        conn = self._http(host, timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            h = _headers_dict(resp)
            return Response((resp.status, h, _decode_body(h, payload) if decode else payload))
        finally:
            conn.close()

    # shorthands
    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def new_session(self, **fields):
        r = self.post("/sessions/new", fields)
        if r.status != 201:
            raise RuntimeError("POST /sessions/new %r -> %s %r" % (fields, r.status, r.body))
        return r.body["session_id"]

    def add_message(self, sid, content):
        r = self.post("/sessions/%s/messages" % sid, {"content": content})
        if r.status != 201:
            raise RuntimeError("POST message -> %s %r" % (r.status, r.body))
        return r.body

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def kill9(self):
        """SIGKILL (the crash test only). Returns the exit status (-9)."""
        if self.popen is None or self.popen.poll() is not None:
            return self.popen and self.popen.returncode
        self.popen.send_signal(signal.SIGKILL)
        self.returncode = self.popen.wait()
        self.failed_at_stop = self.t.failed if self.t is not None else 0
        return self.returncode

    def stop(self, check=True):
        """SIGTERM (then SIGKILL after 10 s); with check, reports `exit code 0`."""
        if self.popen is None:
            return None
        if self.returncode is not None:
            return self.returncode  # already stopped (and reported) once
        was_running = self.popen.poll() is None
        self.returncode = _stop_pid(self.popen)
        self.failed_at_stop = self.t.failed if self.t is not None else 0
        if check and self.t is not None:
            self.t.eq("%s (port %d) exits 0 on SIGTERM%s" % (
                self.name, self.port, "" if was_running else " (had already exited)"),
                self.returncode, 0)
            if self.returncode != 0:
                self.print_log_tail(self.t)
        return self.returncode

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return "(no log: %s)" % e
        return "\n".join(lines[-n:])

    def print_log_tail(self, t, n=30):
        if getattr(self, "_tail_printed", False):
            return
        self._tail_printed = True
        t.diag("--- last %d lines of stderr of %s (pid %s, port %d) ---" % (
            n, self.name, self.popen.pid if self.popen else "-", self.port))
        t.diag(self.log_tail(n))


# ---------------------------------------------------------------- assertions

def check_error(t, name, resp, status, code, mentions=None):
    """resp is exactly status + {"error": {"code": code, "message": non-empty}} as JSON."""
    st, h, body = resp
    t.eq("%s: status %d" % (name, status), st, status)
    ctype = h.get("content-type", "")
    t.ok("%s: Content-Type application/json" % name,
         ctype.split(";")[0].strip().lower() == "application/json", "got %r" % ctype)
    shape = (isinstance(body, dict) and set(body) == {"error"}
             and isinstance(body["error"], dict) and set(body["error"]) == {"code", "message"})
    t.ok("%s: body is exactly {error:{code,message}}" % name, shape, "got %r" % (body,))
    err = body.get("error") if isinstance(body, dict) else None
    got_code = err.get("code") if isinstance(err, dict) else None
    msg = err.get("message") if isinstance(err, dict) else None
    t.eq("%s: error code" % name, got_code, code)
    t.ok("%s: non-empty message" % name, isinstance(msg, str) and msg.strip() != "",
         "got %r" % (msg,))
    if mentions is not None:
        t.ok("%s: message names %r" % (name, mentions),
             isinstance(msg, str) and mentions in msg, "got %r" % (msg,))


def is_json(resp):
    return resp[1].get("content-type", "").split(";")[0].strip().lower() == "application/json"


# ---------------------------------------------------------------- broker

class Broker(Rest):
    """A bin/parley-broker process on a free loopback port.

    Shares tmpdir (and so the database file and the notification socket path) with a Rest
    when given rest.tmpdir; pass port=rest.ws_port so REST's --ws-port names this broker.
    flags: dict merged over the defaults (--db, --bind, --port, --notify-socket,
    --log-level, --llm); a value of None drops that flag. Ready when a WebSocket
    handshake on /ws succeeds.
    """

    def __init__(self, t, flags=None, env=None, tmpdir=None, port=None, llm="echo",
                 name="parley-broker", start=True, ready_timeout=10.0):
        self.t = t
        self.name = name
        self.tmpdir = tmpdir or make_tmpdir()
        self.db = given_db(flags, self.tmpdir)  # what --db gets: a path or a URI
        self.notify_socket = os.path.join(self.tmpdir, "broker.sock")
        self.port = port or free_port()
        self.flags = {
            "--db": self.db,
            "--bind": "127.0.0.1",
            "--port": str(self.port),
            "--notify-socket": self.notify_socket,
            "--log-level": "debug",
            "--llm": llm,
        }
        self.flags.update(flags or {})
        self.env = env or {}
        self.argv_extra = []
        self.popen = None
        self.returncode = None
        self.log_path = None
        self.ready_timeout = ready_timeout
        if start:
            self.start()

    @property
    def url(self):
        return "ws://127.0.0.1:%d/ws" % self.port

    def argv(self):
        argv = Rest.argv(self)
        argv[0] = os.path.join(BIN_DIR, "parley-broker")
        return argv

    def probe(self):
        ipv6 = self.flags.get("--bind") in ("::1", "::")
        sock, _ = ws_handshake(self.port, host="::1" if ipv6 else "127.0.0.1", timeout=2)
        try:
            sock.sendall(ws_frame(0x8, b"\x03\xe8"))  # close 1000
        except OSError:
            pass
        sock.close()

    def client(self, name="ws", **kw):
        return WsClient(self.url, name=name, **kw)


# ---------------------------------------------------------------- raw WebSocket frames

def ws_handshake(port, path="/ws", host="127.0.0.1", timeout=5, headers=None, sock=None):
    """A hand-made upgrade on a plain socket (sock: one already connected to host:port,
    e.g. made inside a network namespace). Returns (socket, bytes already read past the
    response headers); raises ValueError when the answer is not 101."""
    import base64
    if sock is None:
        sock = socket.create_connection((host, port), timeout=timeout)
    else:
        sock.settimeout(timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        shown = "[%s]" % host if ":" in host else host
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (shown, port), "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key,
                 "Sec-WebSocket-Version: 13"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise ValueError("no handshake answer within %s s: %r" % (timeout, buf))
            chunk = sock.recv(4096)
            if not chunk:
                raise ValueError("connection closed during the handshake: %r" % buf)
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ValueError("handshake answered %r" % status)
        return sock, rest
    except BaseException:
        sock.close()
        raise


def send_upgrade(sock, port, path="/ws", headers=None):
    """Writes a hand-made WebSocket upgrade request for path on sock (Host 127.0.0.1:port,
    a fresh key) with the extra headers; the caller reads the answer."""
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Upgrade: websocket",
             "Connection: Upgrade",
             "Sec-WebSocket-Key: %s" % base64.b64encode(os.urandom(16)).decode(),
             "Sec-WebSocket-Version: 13"]
    lines += ["%s: %s" % kv for kv in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


def ws_frame(opcode, payload=b"", fin=True):
    """One masked client frame."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def ws_read_frame(sock, buf, deadline):
    """Reads one server frame. Returns (opcode, payload, rest of buf); opcode None on EOF;
    raises socket.timeout past the deadline."""
    def need(n):
        nonlocal buf
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame before the deadline")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buf += chunk
        return True

    if not need(2):
        return None, b"", buf
    op = buf[0] & 0x0F
    n = buf[1] & 0x7F
    pos = 2
    if n == 126:
        if not need(4):
            return None, b"", buf
        n = int.from_bytes(buf[2:4], "big")
        pos = 4
    elif n == 127:
        if not need(10):
            return None, b"", buf
        n = int.from_bytes(buf[2:10], "big")
        pos = 10
    if not need(pos + n):
        return None, b"", buf
    return op, buf[pos:pos + n], buf[pos + n:]


# ---------------------------------------------------------------- WebSocket client

_aio_loop = None
_aio_lock = threading.Lock()
_clients = []


def _aio():
    """The asyncio loop (in a daemon thread) every WsClient of this process runs on."""
    global _aio_loop
    import asyncio
    with _aio_lock:
        if _aio_loop is None:
            _aio_loop = asyncio.new_event_loop()
            threading.Thread(target=_aio_loop.run_forever, name="ws-loop", daemon=True).start()
        return _aio_loop


def _aio_call(coro, timeout):
    import asyncio
    import concurrent.futures
    fut = asyncio.run_coroutine_threadsafe(coro, _aio())
    try:
        return fut.result(timeout)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise TimeoutError("no result within %.1f s" % timeout) from None


class ExpectError(AssertionError):
    pass


def one_of(*values):
    """A matcher for WsClient.expect: the field equals one of values."""
    return lambda v: any(strict_equal(v, x) for x in values)


def _frame_matches(msg, match, pred):
    if not isinstance(msg, dict):
        return False
    for k, want in match.items():
        if k not in msg:
            return False
        if callable(want):
            if not want(msg[k]):
                return False
        elif not strict_equal(msg[k], want):
            return False
    return pred is None or bool(pred(msg))


class WsClient:
    """A synchronous-looking WebSocket client (python3-websockets on a background loop).

    Every text frame received is parsed as JSON (kept as the raw str when it is not) and
    buffered in arrival order; expect(**fields) takes the first buffered frame whose
    fields equal the given values (or satisfy a given callable), waiting up to timeout,
    and leaves the others in the buffer. The client answers pings by itself and sends none.
    """

    def __init__(self, url, name="ws", timeout=10, headers=None, **kw):
        import websockets
        self.url = url
        self.name = name
        self._cond = threading.Condition()
        self._buf = []
        self.received = []  # every frame, in order, for diagnostics
        self.closed = False
        self.close_code = None
        self.close_reason = None
        self.closed_at = None

        async def _open():
            return await websockets.connect(url, ping_interval=None, max_size=None,
                                            open_timeout=timeout, close_timeout=5,
                                            extra_headers=headers, **kw)
        self.ws = _aio_call(_open(), timeout + 2)
        _clients.append(self)
        import asyncio
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), _aio())

    async def _read(self):
        try:
            while True:
                data = await self.ws.recv()
                if isinstance(data, str):
                    try:
                        msg = json.loads(data)
                    except ValueError:
                        msg = data
                else:
                    msg = data
                with self._cond:
                    self._buf.append(msg)
                    self.received.append(msg)
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - ConnectionClosed* ends the reader
            pass
        finally:
            with self._cond:
                self.closed = True
                self.closed_at = time.monotonic()
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
                self._cond.notify_all()

    # ---- sending
    def send(self, obj, timeout=10):
        """dict/list: as JSON text; str: a text frame as is; bytes: a binary frame."""
        data = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
        _aio_call(self.ws.send(data), timeout)

    def send_fragments(self, parts, timeout=10):
        """One message sent as len(parts) fragments (str parts: text, bytes: binary)."""
        _aio_call(self.ws.send(list(parts)), timeout)

    # ---- receiving
    def _describe(self, match, pred):
        want = ", ".join("%s=%s" % (k, "<pred>" if callable(v) else repr(v))
                         for k, v in match.items())
        return "%s{%s}%s" % (self.name, want, " +pred" if pred else "")

    def expect(self, timeout=5.0, pred=None, **match):
        """The first buffered frame matching, removed from the buffer; ExpectError if none
        arrives within timeout (or the connection closes first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, msg in enumerate(self._buf):
                    if _frame_matches(msg, match, pred):
                        del self._buf[i]
                        return msg
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    break
                self._cond.wait(left)
            why = ("connection closed (code %s)" % self.close_code) if self.closed else \
                "nothing within %.1f s" % timeout
            raise ExpectError("%s: %s; unmatched frames buffered: %s" % (
                self._describe(match, pred), why, _one_line(repr(self._buf), 1500)))

    def take_all(self, pred=None, **match):
        """Every buffered frame matching (removed), in order; does not wait."""
        with self._cond:
            got = [m for m in self._buf if _frame_matches(m, match, pred)]
            self._buf = [m for m in self._buf if not _frame_matches(m, match, pred)]
            return got

    def quiet(self, seconds, pred=None, **match):
        """Waits `seconds`, then returns (and removes) the frames matching that arrived."""
        time.sleep(seconds)
        return self.take_all(pred=pred, **match)

    def pending(self):
        with self._cond:
            return list(self._buf)

    def clear(self):
        with self._cond:
            self._buf = []

    def request(self, obj, timeout=5.0, pred=None, **match):
        self.send(obj)
        return self.expect(timeout=timeout, pred=pred, **match)

    def ping_ok(self, timeout=5.0):
        """True when an app-level ping is answered with pong (the connection is usable)."""
        try:
            self.send({"type": "ping"})
            self.expect(timeout=timeout, type="pong")
            return True
        except Exception:  # noqa: BLE001
            return False

    def wait_closed(self, timeout=5.0):
        """The close code once the connection is closed, None if still open after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.close_code

    def close(self, timeout=5.0):
        if self.closed:
            return self.close_code
        try:
            _aio_call(self.ws.close(), timeout + 5)
        except Exception:  # noqa: BLE001
            pass
        return self.wait_closed(timeout)

    def abort(self):
        """Drops the TCP connection without a close frame."""
        loop = _aio()
        loop.call_soon_threadsafe(self.ws.transport.abort)
        self.wait_closed(5)

    # ---- session helpers
    def create_session(self, timeout=5.0, **fields):
        ev = self.request(dict(type="create_session", **fields), timeout=timeout,
                          type="session_created")
        return ev["session_id"]

    def join(self, sid, timeout=5.0, **fields):
        return self.request(dict(type="join_session", session_id=sid, **fields),
                            timeout=timeout, type="session_joined", session_id=sid)

    def chat(self, text, timeout=5.0, **fields):
        """Sends a chat and returns its acknowledgement (message_added with this content)."""
        self.send(dict(type="chat", message=text, **fields))
        return self.expect(timeout=timeout, type="session_update", update_type="message_added",
                           pred=lambda m: isinstance(m.get("message"), dict) and
                           m["message"].get("content") == text)

    def read_reply(self, sid, timeout=20.0):
        """The frames of one assistant reply in session sid, in arrival order: from the
        first status/response_start/chunk through response_complete."""
        types = one_of("status", "response_start", "chunk", "response_complete")
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            f = self.expect(timeout=left, type=types, session_id=sid)
            frames.append(f)
            if f["type"] == "response_complete":
                return frames


def close_clients():
    for c in list(_clients):
        if not c.closed:
            try:
                c.close(timeout=2)
            except Exception:  # noqa: BLE001
                pass


def echo_chunks(text):
    """How the echo assistant splits text: each word with the whitespace after it, the
    leading whitespace going with the first word."""
    return re.findall(r"\s*\S+\s*", text)


def check_reply(t, name, frames, sid, text=None, stopped=False, chunks=None):
    """frames (from WsClient.read_reply) are exactly status, response_start, the chunks
    numbered 1..n, a final empty chunk is_final:true, response_complete.
    text: the full reply expected (the echo: the user message); chunks: the exact chunk
    texts expected (default echo_chunks(text)). With stopped, the chunks are a prefix.
    Returns the response_complete frame (or None)."""
    types = [f.get("type") for f in frames]
    t.ok("%s: status, response_start, chunks, response_complete in that order" % name,
         len(frames) >= 4 and types[0] == "status" and types[1] == "response_start" and
         all(x == "chunk" for x in types[2:-1]) and types[-1] == "response_complete",
         "types %r" % types)
    if len(frames) < 4 or types[-1] != "response_complete":
        return None
    st, start, body, done = frames[0], frames[1], frames[2:-1], frames[-1]
    t.keys("%s: status fields" % name, st, {"type", "session_id", "message", "context_messages"})
    t.ok("%s: status.message is a string" % name, isinstance(st.get("message"), str),
         repr(st.get("message")))
    t.is_int("%s: status.context_messages int >= 1" % name, st.get("context_messages"), 1)
    t.keys("%s: response_start fields" % name, start, {"type", "session_id", "response_id"})
    rid = start.get("response_id")
    t.match("%s: response_id is 16 hex" % name, rid, r"^[0-9a-f]{16}$")
    bad = [c for c in body if set(c) != {"type", "session_id", "response_id", "text",
                                         "chunk_number", "is_final"}]
    t.ok("%s: every chunk has exactly type, session_id, response_id, text, chunk_number, "
         "is_final" % name, not bad, repr(bad[:2]))
    t.ok("%s: every frame names the session and the response" % name,
         all(f.get("session_id") == sid for f in frames) and
         all(f.get("response_id") == rid for f in frames[1:]),
         repr([(f.get("session_id"), f.get("response_id")) for f in frames][:5]))
    t.eq("%s: chunk_number runs 1..n" % name, [c.get("chunk_number") for c in body],
         list(range(1, len(body) + 1)))
    t.eq("%s: only the last chunk is final" % name, [c.get("is_final") for c in body],
         [False] * (len(body) - 1) + [True])
    t.eq("%s: the final chunk is empty" % name, body[-1].get("text") if body else None, "")
    texts = [c.get("text") for c in body[:-1]]
    if text is not None and not stopped:
        t.eq("%s: chunk texts (word + following whitespace)" % name, texts,
             chunks if chunks is not None else echo_chunks(text))
        t.eq("%s: chunks concatenate to the reply exactly" % name, "".join(texts), text)
    elif text is not None:
        want = chunks if chunks is not None else echo_chunks(text)
        t.ok("%s: stopped: the chunks are a strict prefix of the reply's" % name,
             texts == want[:len(texts)] and len(texts) < len(want),
             "%d chunks %r vs %d expected" % (len(texts), texts[-3:], len(want)))
    t.keys("%s: response_complete fields" % name, done,
           {"type", "session_id", "response_id", "message_id", "total_chunks",
            "processing_time", "message_count", "stopped"})
    t.is_int("%s: response_complete.message_id int >= 1" % name, done.get("message_id"), 1)
    t.eq("%s: total_chunks counts every chunk, the final one included" % name,
         done.get("total_chunks"), len(body))
    pt = done.get("processing_time")
    t.ok("%s: processing_time is a number >= 0" % name,
         type(pt) in (int, float) and pt >= 0, repr(pt))
    t.is_int("%s: message_count int >= 2" % name, done.get("message_count"), 2)
    t.eq("%s: stopped" % name, done.get("stopped"), stopped)
    return done


# ---------------------------------------------------------------- sqlite3 shell / psql

SQLITE = "/usr/bin/sqlite3"
PSQL = os.path.join(os.environ.get("PARLEY_TEST_PG_BIN") or pgcluster.PG_BIN, "psql")


def sql(db, query, timeout=10):
    """One run of the sqlite3 shell on db, or when db is a PostgreSQL URI, of psql
    (-X -q -At -F'|', statements one by one, stopping at an error): (exit code, output
    lines), `|`-separated, NULL as an empty field, the error text appended on failure.
    Write queries both understand (coalesce, not ifnull); for timestamps see ts_sql."""
    if is_pg(db):
        return pgcluster.psql_uri(db, query, timeout=timeout, psql=PSQL)
    p = subprocess.run([SQLITE, "-batch", db, query], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        out += p.stderr.decode("utf-8", "replace")
    return p.returncode, out.splitlines()


def ts_sql(db, column):
    """An SQL expression that reads a timestamp column as the JSON shows it
    (2026-01-20T12:34:56.789Z): the column itself on SQLite (ISO text already); on
    PostgreSQL, whose timestamptz prints as `2026-01-20 12:34:56.789+00` in the server's
    zone, formatted in UTC with to_char."""
    if is_pg(db):
        return ("to_char((%s)::timestamptz AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')" % column)
    return column


def db_shell_missing(t, db=None):
    """True (after one `not ok`) when the shell the pass reads its database with (sqlite3,
    or psql in a PostgreSQL pass) is not installed."""
    pg = is_pg(db) if db is not None else PG
    exe = PSQL if pg else SQLITE
    if os.access(exe, os.X_OK):
        return False
    t.fail("%s present" % ("psql" if pg else "sqlite3 shell"), "%s missing (apt-get install "
           "%s)" % (exe, "postgresql" if pg else "sqlite3"))
    return True


sqlite_missing = db_shell_missing


def skip_unless_sqlite(t, name, reason, db=None):
    """True when db (default: the pass's) is SQLite; else reports `name` skipped with
    `reason` (why it only means something on SQLite) and returns False."""
    pg = is_pg(db) if db is not None else PG
    if not pg:
        return True
    t.skip(name, "SQLite only: " + reason)
    return False


SHELL_MARK = "END-OF-QUERY-5b1e"


class Shell:
    """An interactive sqlite3 process fed through a pipe (like a person at the prompt).

    BEGIN_READ opens a read transaction that keeps its snapshot; BEGIN_WRITE takes the
    database's write lock (other writers wait, then time out), readers go on."""

    BEGIN_READ = "BEGIN;"
    BEGIN_WRITE = "BEGIN IMMEDIATE;"
    kind = "sqlite3"

    def __init__(self, db):
        self.p = subprocess.Popen(self._argv(db), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=self._env())
        self.buf = b""

    def _argv(self, db):
        return [SQLITE, "-batch", db]

    def _env(self):
        return None

    def _mark(self):
        return "SELECT '%s';" % SHELL_MARK

    def query(self, text, timeout=10):
        self.p.stdin.write((text + "\n%s\n" % self._mark()).encode())
        self.p.stdin.flush()
        deadline = time.monotonic() + timeout
        while (SHELL_MARK + "\n").encode() not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("%s shell did not answer %r; got %r" % (
                    self.kind, text, self.buf))
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError("%s shell exited; got %r" % (self.kind, self.buf))
                self.buf += chunk
        out, _, self.buf = self.buf.partition((SHELL_MARK + "\n").encode())
        return out.decode("utf-8", "replace").splitlines()

    def close(self):
        try:
            self.p.stdin.write(b".quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


class PgShell(Shell):
    """The same with psql on a PostgreSQL database (a person at the psql prompt).

    BEGIN_READ is a REPEATABLE READ transaction (its snapshot is kept from the first
    query on, like the sqlite3 reader's); BEGIN_WRITE is the twin of SQLite's write lock:
    every table of the database locked IN EXCLUSIVE MODE, which lets plain SELECTs through
    and makes every INSERT, UPDATE and DELETE wait."""

    BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ;"
    kind = "psql"

    def __init__(self, db):
        Shell.__init__(self, db)
        lines = self.query("SELECT string_agg(format('%I.%I', schemaname, tablename), ', ' "
                           "ORDER BY schemaname, tablename) FROM pg_tables WHERE schemaname "
                           "NOT IN ('pg_catalog', 'information_schema');")
        tables = lines[0] if lines and lines[0] else None
        # a long deadlock_timeout of its own: should a process's transaction and these
        # locks wait on each other, the process sees the deadlock (and fails, as behind
        # SQLite's lock), not the person holding the lock
        self.BEGIN_WRITE = ("BEGIN; SET LOCAL deadlock_timeout = '10min'; "
                            "LOCK TABLE %s IN EXCLUSIVE MODE;" % tables if tables else "BEGIN;")

    def _argv(self, db):
        return [PSQL, "-X", "-q", "-At", "-F", "|", "-d", db]

    def _env(self):
        return pgcluster._env()

    def _mark(self):
        return "\\echo %s" % SHELL_MARK  # answered in an aborted transaction too

    def close(self):
        try:
            self.p.stdin.write(b"\\q\n")
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


def shell(db):
    """An interactive shell on db: Shell (sqlite3) or PgShell (psql)."""
    return PgShell(db) if is_pg(db) else Shell(db)
