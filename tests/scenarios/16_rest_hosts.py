"""DNS-rebinding protection on REST (SPEC 6): with no API key, a real parley-rest answers
only requests whose Host is loopback (localhost, 127.x.x.x, [::1], with or without a
port), the host of --public-url or --public-ws-url, or an --allowed-host; any other Host
gets 403 with the JSON error body (code forbidden). A request without Host (HTTP/1.0) is
answered. With an API key stored (`parley-rest keys add`) or --require-auth, the check
is off: the key protects, and the answer is the usual 401 without one."""

import os
import socket
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, check_error, run_cli  # noqa: E402


def raw(port, request):
    """Sends request bytes as they are; returns (status int or None, body bytes)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(request)
        buf = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        sock.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None), body


def with_host(r, host, path="/sessions", method="GET", headers=None):
    h = {"Host": host}
    h.update(headers or {})
    return r.request(method, path, headers=h)


def main(t):
    r = Rest(t, flags={"--allowed-host": ["app.example", "[fd00::7]:9000"],
                       "--public-url": "https://pub.example/parley",
                       "--public-ws-url": "wss://ws.example/ws"})
    port = r.port
    for host in ["127.0.0.1:%d" % port, "127.0.0.1", "localhost", "LOCALHOST:%d" % port,
                 "localhost.:%d" % port, "127.9.8.7:%d" % port, "[::1]:%d" % port, "[::1]"]:
        resp = with_host(r, host)
        t.eq("Host %s: GET /sessions answered 200" % host, resp.status, 200)
    for host in ["app.example", "APP.example:8000", "[fd00::7]", "pub.example:443",
                 "ws.example"]:
        resp = with_host(r, host)
        t.eq("Host %s (configured): GET /sessions answered 200" % host, resp.status, 200)

    for host, path, method in [("evil.example", "/sessions", "GET"),
                               ("evil.example:%d" % port, "/health", "GET"),
                               ("127.0.0.1.evil.example", "/", "GET"),
                               ("127.evil.example", "/sessions/new", "POST"),
                               ("localhost.evil.example", "/demo", "GET"),
                               ("0.0.0.0:%d" % port, "/sessions", "GET"),
                               ("[::2]:%d" % port, "/nope", "DELETE")]:
        resp = with_host(r, host, path, method)
        check_error(t, "Host %s: %s %s" % (host, method, path), resp, 403, "forbidden",
                    mentions="--allowed-host")
    resp = with_host(r, "evil.example")
    t.ok("403 says how to fix it (names the Host and an API key)",
         isinstance(resp.body, dict) and "evil.example" in resp.body["error"]["message"]
         and "API key" in resp.body["error"]["message"], "got %r" % (resp.body,))
    resp = with_host(r, "evil.example", "/sessions/new", "POST")
    t.eq("a refused POST made no session", len(r.get("/sessions").body["sessions"]), 0)

    st, body = raw(port, b"GET /health HTTP/1.0\r\n\r\n")
    t.eq("HTTP/1.0 without Host: 200", st, 200)
    st, body = raw(port, b"GET /health HTTP/1.0\r\nHost: evil.example\r\n\r\n")
    t.eq("HTTP/1.0 with Host evil.example: 403", st, 403)
    t.ok("HTTP/1.0 403 body has code forbidden", b'"code":"forbidden"' in body, repr(body))
    r.stop()

    # a key stored: the check is off, the key protects
    k = Rest(t)
    code, out, err = run_cli("parley-rest", ["--db", k.db, "--notify-socket", k.notify_socket,
                                             "keys", "add", "hosts"])
    t.eq("keys add exits 0", code, 0)
    key = out.strip().split()[-1] if out.strip() else ""
    resp = with_host(k, "evil.example")
    check_error(t, "with a key: Host evil.example without the key", resp, 401, "unauthorized")
    resp = with_host(k, "evil.example", headers={"Authorization": "Bearer " + key})
    t.eq("with a key: Host evil.example with the key: 200", resp.status, 200)
    resp = with_host(k, "evil.example", "/health")
    t.eq("with a key: Host evil.example on a public path: 200", resp.status, 200)
    k.stop()

    # --require-auth (no key stored): keys are required anyway, the check is off
    q = Rest(t, env={"PARLEY_REQUIRE_AUTH": "1"})
    resp = with_host(q, "evil.example", "/health")
    t.eq("--require-auth: Host evil.example on /health: 200", resp.status, 200)
    resp = with_host(q, "evil.example")
    check_error(t, "--require-auth: Host evil.example on /sessions", resp, 401, "unauthorized")
    q.stop()

    # --allowed-host '*': any Host; a hostile one is still not echoed into ws_url
    a = Rest(t, flags={"--allowed-host": "*"})
    resp = with_host(a, "evil\"<script>x", "/")
    ws = resp.body.get("ws_url") if isinstance(resp.body, dict) else None
    t.ok("--allowed-host '*': GET / with a hostile Host: 200, ws_url does not echo it",
         resp.status == 200 and isinstance(ws, str) and "<" not in ws and '"' not in ws,
         "status %r ws_url %r" % (resp.status, ws))
    a.stop()

    # PARLEY_ALLOWED_HOST, comma-separated
    e = Rest(t, env={"PARLEY_ALLOWED_HOST": "one.example,two.example"})
    t.eq("PARLEY_ALLOWED_HOST: two.example answered", with_host(e, "two.example").status, 200)
    t.eq("PARLEY_ALLOWED_HOST: three.example refused", with_host(e, "three.example").status,
         403)
    e.stop()


parley.run(main)
