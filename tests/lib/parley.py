"""Helpers for Parley scenario tests: ports, a result reporter, process wrappers.

Scenario scripts print one line per test case, `ok - NAME` or `not ok - NAME: detail`;
any other line is a diagnostic (tests/run.py indents it). Processes are started from
PARLEY_BIN_DIR with a temporary database and stopped by pid only: SIGTERM, up to 10 s,
then SIGKILL. This module is standard library only and runs under /usr/bin/python3.
"""

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

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
        self.diag("%d passed, %d failed" % (self.passed, self.failed))
        cleanup()
        sys.stdout.flush()
        sys.exit(1 if self.failed or not self.passed else 0)


def run(main):
    """Runs main(t) with a Reporter, reporting an escaped exception, then t.done()."""
    t = Reporter()
    try:
        main(t)
    except Exception as e:  # noqa: BLE001
        t.fail("scenario aborted", "%s: %s" % (type(e).__name__, e))
        t.diag(traceback.format_exc())
    t.done()


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
    for p in _procs:
        if p.popen is not None and p.popen.poll() is None:
            _stop_pid(p.popen)
    if not os.environ.get("PARLEY_KEEP_TMP"):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
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
        self.db = os.path.join(self.tmpdir, "parley.db")
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
            self.popen = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log,
                                          env=_child_env(self.env), cwd=self.tmpdir)
        finally:
            log.close()
        _procs.append(self)
        self.wait_ready()
        return self

    def wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready; stderr:\n%s" % (
                    self.name, self.popen.returncode, self.log_tail()))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                return
            except OSError as e:
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
        conn = http.client.HTTPConnection(host or "127.0.0.1", self.port, timeout=timeout)
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
