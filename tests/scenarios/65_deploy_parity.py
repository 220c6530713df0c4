"""parley-fcgi behind nginx answers as parley-rest does: both on one database, the same
requests (reads, bad input, 404, 405, 413, 415) compared status, Content-Type, Allow
and body, exactly."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402
from parley import Rest, free_port, make_tmpdir  # noqa: E402


def main(t):
    tmp = make_tmpdir()
    www, _ = deploy.make_www(tmp)
    web_port = free_port()
    public = "ws://127.0.0.1:%d/ws" % web_port
    flags = {"--www-dir": www, "--public-ws-url": public}
    rest = Rest(t, tmpdir=tmp, flags=flags)
    fcgi = deploy.Fcgi(t, tmpdir=tmp, ws_port=rest.ws_port, flags=flags)
    web = deploy.WebServer(t, "nginx", tmp, www, fcgi.socket_spec, free_port(), port=web_port)
    front = deploy.Front(web.port)
    sid = rest.new_session(title="parity")
    rest.add_message(sid, "one")
    rest.add_message(sid, "two")
    cases = [
        ("GET", "/", {}),
        ("GET", "/sessions", {}),
        ("GET", "/sessions?limit=1&offset=0", {}),
        ("GET", "/sessions?limit=0", {}),
        ("GET", "/sessions?limit=abc", {}),
        ("GET", "/sessions/%s" % sid, {}),
        ("GET", "/sessions/%s?limit=1" % sid, {}),
        ("GET", "/sessions/ffffffffffffffff", {}),
        ("GET", "/sessions/not-an-id", {}),
        ("GET", "/no/such/route", {}),
        ("PUT", "/sessions", {}),
        ("DELETE", "/sessions", {}),
        ("POST", "/health", {}),
        ("PATCH", "/sessions/%s" % sid, {}),
        ("POST", "/sessions/new", {"raw": b"{bad json"}),
        ("POST", "/sessions/new", {"raw": b"[1, 2]"}),
        ("POST", "/sessions/new", {"body": {"title": 5}}),
        ("POST", "/sessions/new", {"body": {"title": "x" * 70000}}),
        ("POST", "/sessions/new", {"raw": b'{"title": "t"}',
                                   "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/sessions/%s/messages" % sid, {"body": {}}),
        ("POST", "/sessions/%s/messages" % sid, {"body": {"content": ""}}),
        ("POST", "/sessions/ffffffffffffffff/clear", {}),
        ("GET", "/css/%2e%2e/missing.txt", {}),
        ("GET", "/missing.html", {}),
    ]
    for method, path, kw in cases:
        name = "%s %s%s" % (method, path, " (%s)" % ", ".join(sorted(kw)) if kw else "")
        a = rest.request(method, path, **kw)
        b = front.request(method, path, **kw)
        t.eq("same status: " + name, b.status, a.status)
        t.eq("same Content-Type: " + name, b.headers.get("content-type"),
             a.headers.get("content-type"))
        t.eq("same Allow: " + name, b.headers.get("allow"), a.headers.get("allow"))
        t.eq("same body: " + name, b.body, a.body)
    t.ok("the cases include 404, 405, 413 and 415",
         {404, 405, 413, 415} <= {rest.request(m, p, **kw).status for m, p, kw in cases})
    web.stop()
    fcgi.stop()
    rest.stop()


parley.run(main)
