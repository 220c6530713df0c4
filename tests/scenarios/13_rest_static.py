"""REST static files: /demo, content types, and no way out of --www-dir."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, check_error, make_tmpdir  # noqa: E402

SECRET = b"TOP-SECRET-7f3a9c parley test canary"

FILES = {
    "demo.html": (b"<!doctype html><title>Parley demo</title><p>demo page</p>\n",
                  "text/html; charset=utf-8"),
    "page.html": (b"<!doctype html><p>another page \xe2\x9c\x93</p>\n", "text/html; charset=utf-8"),
    "style.css": (b"body { color: #222; }\n", "text/css; charset=utf-8"),
    "app.js": (b"console.log('parley');\n", "text/javascript; charset=utf-8"),
    "data.json": (b'{"hello": "world"}\n', "application/json"),
    "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>\n',
                 "image/svg+xml"),
    "notes.txt": (b"plain text\n", "text/plain; charset=utf-8"),
    "css/demo.css": (b".demo { margin: 0 }\n", "text/css; charset=utf-8"),
    "js/lib/deep.js": (b"export const deep = 1;\n", "text/javascript; charset=utf-8"),
    "index.html": (b"<!doctype html><p>index in www</p>\n", "text/html; charset=utf-8"),
}

ESCAPES = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/%2e./secret.txt",
    "/..%2fsecret.txt",
    "/..%2Fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/a/../../secret.txt",
    "/css/../../secret.txt",
    "/css/%2e%2e/%2e%2e/secret.txt",
    "/./../secret.txt",
    "/css/..%5c..%5csecret.txt",
    "/..\\secret.txt",
    "/escape-link.txt",
    "/outside-dir/inner.txt",
    "/css/../style.css",
    "/%2e%2e/www/style.css",
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/../../../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
]


def build_www():
    base = make_tmpdir("parley-www-")
    www = os.path.join(base, "www")
    for rel, (data, _) in FILES.items():
        p = os.path.join(www, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    with open(os.path.join(base, "secret.txt"), "wb") as f:
        f.write(SECRET)
    outside = os.path.join(base, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "inner.txt"), "wb") as f:
        f.write(SECRET)
    os.symlink(os.path.join(base, "secret.txt"), os.path.join(www, "escape-link.txt"))
    os.symlink("../secret.txt", os.path.join(www, "css", "rel-escape.css"))
    os.symlink(outside, os.path.join(www, "outside-dir"))
    return www


def main(t):
    www = build_www()
    rest = Rest(t, flags={"--www-dir": www})

    with t.section("files"):
        for rel, (data, ctype) in FILES.items():
            r = rest.get("/" + rel, decode=False)
            t.eq("GET /%s: 200" % rel, r.status, 200)
            t.eq("GET /%s: Content-Type" % rel, r.headers.get("content-type"), ctype)
            t.eq("GET /%s: exact bytes" % rel, r.body, data)
    with t.section("demo"):
        r = rest.get("/demo")
        t.eq("GET /demo: 200", r.status, 200)
        t.eq("GET /demo: text/html; charset=utf-8", r.headers.get("content-type"),
             "text/html; charset=utf-8")
        t.eq("GET /demo: serves demo.html", r.body, FILES["demo.html"][0])
        r = rest.get("/demo?x=1")
        t.eq("GET /demo?x=1: query ignored", (r.status, r.body), (200, FILES["demo.html"][0]))
    with t.section("GET / stays the API"):
        r = rest.get("/")
        t.ok("GET / is the JSON index even with an index.html in www",
             isinstance(r.body, dict) and r.body.get("name") == "parley", repr(r.body)[:200])
    with t.section("missing"):
        check_error(t, "GET /missing.css", rest.get("/missing.css"), 404, "not_found")
        check_error(t, "GET /css (a directory)", rest.get("/css"), 404, "not_found")
        check_error(t, "GET /css/ (a directory)", rest.get("/css/"), 404, "not_found")
        check_error(t, "GET /demo.html/x", rest.get("/demo.html/x"), 404, "not_found")
    with t.section("escapes"):
        for path in ESCAPES:
            r = rest.get(path)
            check_error(t, "GET %s" % path, r, 404, "not_found")
            raw = r.body if isinstance(r.body, bytes) else repr(r.body).encode()
            t.ok("GET %s: no file content leaks" % path,
                 SECRET not in raw and b"root:" not in raw and b"color: #222" not in raw,
                 "body %r" % raw[:200])
        r = rest.get("/css/rel-escape.css")
        check_error(t, "GET /css/rel-escape.css (relative symlink out)", r, 404, "not_found")
    with t.section("alive"):
        t.eq("static: server still healthy", rest.get("/health").status, 200)
    rest.stop()

    with t.section("PARLEY_WWW_DIR"):
        r2 = Rest(t, env={"PARLEY_WWW_DIR": www}, name="rest-env-www")
        t.eq("PARLEY_WWW_DIR alone: /demo served", r2.get("/demo").body, FILES["demo.html"][0])
        r2.stop()
        empty = os.path.join(make_tmpdir("parley-www-empty-"), "www")
        os.mkdir(empty)
        r3 = Rest(t, flags={"--www-dir": empty}, env={"PARLEY_WWW_DIR": www},
                  name="rest-flag-www")
        check_error(t, "--www-dir beats PARLEY_WWW_DIR: /demo 404 from the empty dir",
                    r3.get("/demo"), 404, "not_found")
        r3.stop()


parley.run(main)
