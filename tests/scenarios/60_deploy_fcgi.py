"""parley-fcgi on its own, driven by a FastCGI client that plays the web server: Status
lines and headers, bodies by CONTENT_LENGTH and to the end of stdin, the 413 cap, the
path from REQUEST_URI / SCRIPT_NAME / PATH_INFO at / and under a prefix, the query, Host
and Content-Type passed through, worker threads, Unix and TCP sockets, the socket on fd 0
from spawn-fcgi, refusals, and SIGTERM with idle and stalled connections."""

import os
import socket
import stat
import struct
import sys
import time
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402
from deploy import Fcgi, fcgi_request  # noqa: E402
from parley import check_error, free_port, make_tmpdir, run_cli  # noqa: E402


def raw(f, params, body=b""):
    status, h, payload, _ = fcgi_request(f.addr, params, body)
    return status, h, payload


def test_headers(t, f):
    status, h, body = raw(f, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/health"})
    t.eq("GET /health: Status line", h.get("status"), "200 OK")
    t.eq("GET /health: Content-Type", h.get("content-type"), "application/json")
    t.eq("GET /health: Content-Length is the body's", h.get("content-length"), str(len(body)))
    t.eq("GET /health: Cache-Control", h.get("cache-control"), "no-cache")
    t.eq("GET /health: X-Accel-Buffering", h.get("x-accel-buffering"), "no")
    status, h, body = raw(f, {"REQUEST_METHOD": "HEAD", "REQUEST_URI": "/health"})
    t.eq("HEAD /health: 200, no body", (status, body), (200, b""))
    t.ok("HEAD /health: Content-Length of the GET body",
         int(h.get("content-length", "0")) > 20, repr(h))
    r = f.post("/sessions/new", {"title": "fcgi"})
    t.eq("POST /sessions/new: Status 201 Created", (r.status, r.headers.get("status")),
         (201, "201 Created"))
    r = f.request("PUT", "/sessions")
    check_error(t, "PUT /sessions", r, 405, "method_not_allowed")
    t.eq("PUT /sessions: Status line", r.headers.get("status"), "405 Method Not Allowed")
    t.eq("PUT /sessions: Allow", r.headers.get("allow"), "GET")
    r = f.get("/nope")
    check_error(t, "GET /nope", r, 404, "not_found")
    t.eq("GET /nope: Status line", r.headers.get("status"), "404 Not Found")


def test_bodies(t, f):
    body = b'{"title": "by length"}'
    status, _, payload = raw(f, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/sessions/new",
                                 "CONTENT_TYPE": "application/json",
                                 "CONTENT_LENGTH": str(len(body))}, body)
    t.eq("body by CONTENT_LENGTH: 201", status, 201)
    t.ok("body by CONTENT_LENGTH: title read", b'"title":"by length"' in payload, payload)
    body = b'{"title": "to the end"}'
    status, _, payload = raw(f, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/sessions/new",
                                 "CONTENT_TYPE": "application/json"}, body)
    t.eq("body without CONTENT_LENGTH, read to the end of stdin: 201", status, 201)
    t.ok("body without CONTENT_LENGTH: title read", b'"title":"to the end"' in payload, payload)
    big = b'{"title": "' + b"x" * 70000 + b'"}'
    for name, params in (("announced", {"CONTENT_LENGTH": str(len(big))}), ("unannounced", {})):
        p = {"REQUEST_METHOD": "POST", "REQUEST_URI": "/sessions/new",
             "CONTENT_TYPE": "application/json"}
        p.update(params)
        status, h, payload = raw(f, p, big)
        r = parley.Response((status, h, parley._decode_body(h, payload)))
        check_error(t, "body above 64 KiB, %s" % name, r, 413, "payload_too_large")
        t.eq("413 %s: Status line" % name, h.get("status"), "413 Payload Too Large")
    exact = b'{"title": "' + b"y" * (65536 - 13) + b'"}'
    t.eq("a body of exactly 65536 bytes is accepted", len(exact), 65536)
    status, _, _ = raw(f, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/sessions/new",
                           "CONTENT_TYPE": "application/json",
                           "CONTENT_LENGTH": str(len(exact))}, exact)
    t.ok("... with 201 or the router's 400 for the long title, not 413", status in (201, 400),
         "status %r" % status)
    r = f.post("/sessions/new", raw=b"{nope")
    check_error(t, "bad JSON", r, 400, "bad_request")
    r = f.request("POST", "/sessions/new", raw=b'{"title": "x"}',
                  headers={"Content-Type": "text/plain"})
    check_error(t, "CONTENT_TYPE text/plain passed through", r, 415, "unsupported_media_type")


def test_paths(t, f):
    sid = f.new_session(title="paths")
    want = (200, sid)

    def got(r):
        return r.status, r.body.get("session_id") if isinstance(r.body, dict) else r.body
    enc = "".join("%%%02X" % ord(c) for c in sid)
    t.eq("REQUEST_URI percent-decoded", got(f.get("/sessions/" + enc)), want)
    t.eq("nginx stock params: SCRIPT_NAME is the whole path, no PATH_INFO",
         got(f.get("/sessions/" + sid, script_name="/sessions/" + sid)), want)
    t.eq("mounted at /api: SCRIPT_NAME=/api PATH_INFO=/sessions/ID",
         got(f.get("/api/sessions/" + sid, script_name="/api", path_info="/sessions/" + sid)),
         want)
    t.eq("lighttpd rewrite: SCRIPT_NAME=/parley.fcgi, REQUEST_URI the original",
         got(f.get("/sessions/" + sid, script_name="/parley.fcgi",
                   path_info="/sessions/" + sid)), want)
    status, _, payload = raw(f, {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/api",
                                 "PATH_INFO": "/sessions/" + sid})
    t.ok("no REQUEST_URI: SCRIPT_NAME + PATH_INFO, mount stripped",
         status == 200 and sid.encode() in payload, "%r %r" % (status, payload[:200]))
    status, _, payload = raw(f, {"REQUEST_METHOD": "GET",
                                 "REQUEST_URI": "http://example.org/sessions/" + sid})
    t.eq("absolute-form REQUEST_URI", status, 200)
    r = f.get("/api", script_name="/api", path_info="")
    check_error(t, "/api without a split is the path /api", r, 404, "not_found")
    check_error(t, "an encoded .. in REQUEST_URI does not leave www/",
                f.get("/%2e%2e/%2e%2e/etc/passwd"), 404, "not_found")
    r = f.get("/sessions?limit=1&offset=0")
    t.eq("QUERY_STRING parsed", (r.body.get("limit"), r.body.get("offset"))
         if isinstance(r.body, dict) else r.body, (1, 0))
    r = f.get("/sessions?limit=0")
    check_error(t, "QUERY_STRING limit=0", r, 400, "invalid_field", mentions="limit")
    r = f.get("/", headers={"Host": "localhost:9"})
    t.eq("HTTP_HOST passed through: ws_url uses it",
         r.body.get("ws_url") if isinstance(r.body, dict) else r.body,
         "ws://localhost:%d/ws" % f.ws_port)
    r = f.get("/sessions", headers={"Host": "example.org:9"})
    check_error(t, "HTTP_HOST example.org with no key: refused", r, 403, "forbidden",
                mentions="--allowed-host")
    t.eq("HTTP_HOST example.org: Status line", r.headers.get("status"), "403 Forbidden")


def test_mount_flags(t):
    tmp = make_tmpdir()
    f = Fcgi(t, tmpdir=tmp, flags={"--mount-prefix": "/api/"}, name="parley-fcgi-api")
    sid = f.new_session(title="prefix")
    r = f.get("/api/sessions/" + sid)
    t.eq("--mount-prefix /api/: /api/sessions/ID", r.status, 200)
    r = f.get("/api")
    t.eq("--mount-prefix /api/: /api is GET /",
         (r.status, r.body.get("name") if isinstance(r.body, dict) else r.body), (200, "parley"))
    check_error(t, "--mount-prefix /api/: /apix is not under it", f.get("/apix"), 404,
                "not_found")
    f.stop()
    f = Fcgi(t, tmpdir=tmp, flags={"--mount-prefix": "/"}, name="parley-fcgi-root")
    r = f.get("/sessions/" + sid, script_name="/sessions", path_info="/" + sid)
    t.eq("--mount-prefix /: Apache-style SCRIPT_NAME/PATH_INFO split is ignored", r.status, 200)
    f.stop()
    code, _, err = run_cli("parley-fcgi", ["--mount-prefix", "api", "--fcgi-socket",
                                           os.path.join(tmp, "x.sock")])
    t.eq("--mount-prefix api (relative) exits 2", code, 2)
    t.match("... saying what a prefix looks like", err, r"/api")


def test_threads(t, f):
    """Two workers: one held by a client that stalls mid-request, the other still serves;
    then many requests at once all succeed."""
    stall = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stall.connect(f.addr)
    stall.sendall(deploy._fcgi_record(deploy.FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 1, 0)))
    time.sleep(0.2)
    t0 = time.monotonic()
    r = f.get("/health")
    t.eq("a stalled connection holds one worker; the other answers", r.status, 200)
    t.ok("... promptly", time.monotonic() - t0 < 2, "%.1f s" % (time.monotonic() - t0))
    results = []

    def one():
        try:
            results.append(f.get("/sessions?limit=1").status)
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))
    threads = [threading.Thread(target=one) for _ in range(24)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    t.eq("24 concurrent requests all answered 200", results, [200] * 24)
    return stall


def test_sockets(t):
    tmp = make_tmpdir()
    f = Fcgi(t, tmpdir=tmp, tcp=True, name="parley-fcgi tcp")
    r = f.get("/health")
    t.eq("TCP 127.0.0.1:PORT: GET /health", r.status, 200)
    f.stop()
    s = Fcgi(t, tmpdir=tmp, spawn=True, name="parley-fcgi under spawn-fcgi")
    r = s.get("/health")
    t.eq("under spawn-fcgi (socket on fd 0): GET /health", r.status, 200)
    s.stop()
    u = Fcgi(t, tmpdir=tmp, name="parley-fcgi unix")
    mode = stat.S_IMODE(os.stat(u.addr).st_mode)
    t.eq("Unix socket created with --fcgi-socket-mode 0666", oct(mode), oct(0o666))
    code, _, err = run_cli("parley-fcgi", ["--db", u.db, "--notify-socket", u.notify_socket,
                                           "--fcgi-socket", u.addr])
    t.eq("a second parley-fcgi on a live socket exits 1", code, 1)
    t.match("... saying another process listens", err, r"another process is listening")
    t.eq("... and the first still serves", u.get("/health").status, 200)
    u.stop()
    t.ok("the Unix socket is removed on exit", not os.path.exists(u.addr), u.addr)
    code, _, err = run_cli("parley-fcgi", ["--db", parley.db_for(tmp, "y.db"),
                                           "--notify-socket", os.path.join(tmp, "n.sock")])
    t.eq("no --fcgi-socket and no socket on fd 0: exits 1", code, 1)
    t.match("... saying how to give one", err, r"--fcgi-socket")
    code, _, err = run_cli("parley-fcgi", ["--db", parley.db_for(tmp, "y.db"),
                                           "--notify-socket", os.path.join(tmp, "n.sock"),
                                           "--fcgi-socket", "0.0.0.0:%d" % free_port()])
    t.eq("TCP beyond loopback with no API key: exits 1 (protected mode)", code, 1)
    t.match("... saying why", err, r"refusing to listen on 0\.0\.0\.0")
    code, out, _ = run_cli("parley-fcgi", ["--help"])
    t.eq("--help exits 0", code, 0)
    for flag in ("--fcgi-socket", "--fcgi-socket-mode", "--mount-prefix", "--threads",
                 "--max-message-size", "--public-ws-url"):
        t.ok("--help lists %s" % flag, flag + " " in out, out[:300])
    code, out, _ = run_cli("parley-fcgi", ["--version"])
    t.eq("--version exits 0", code, 0)
    t.match("--version prints the version", out, r"^parley-fcgi \d+\.\d+\.\d+")


def main(t):
    f = Fcgi(t, flags={"--threads": "2"})
    with t.section("headers"):
        test_headers(t, f)
    with t.section("bodies"):
        test_bodies(t, f)
    with t.section("paths"):
        test_paths(t, f)
    stall = None
    with t.section("threads"):
        stall = test_threads(t, f)
    t0 = time.monotonic()
    f.stop()  # with the stalled connection still open
    t.ok("SIGTERM with a stalled connection: stops within 3 s", time.monotonic() - t0 < 3,
         "%.1f s" % (time.monotonic() - t0))
    if stall:
        stall.close()
    with t.section("mount flags"):
        test_mount_flags(t)
    with t.section("sockets"):
        test_sockets(t)


parley.run(main)
