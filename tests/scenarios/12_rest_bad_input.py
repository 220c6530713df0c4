"""REST bad input: every row of the bad-input table, and the server survives all of it.

Each case is one row of a table: request -> expected status, error code and, for
invalid_field, the name the message must carry.
"""

import http.client
import os
import socket
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, check_error  # noqa: E402

# (name, method, path, raw body, headers, status, code, field named in the message)
# "{sid}" in a path is an existing session. raw bodies go with Content-Type
# application/json unless the headers say otherwise.
JSON = {"Content-Type": "application/json"}
CASES = [
    # invalid JSON
    ("bad JSON: truncated", "POST", "/sessions/new", b'{"title": ', None, 400, "bad_request", None),
    ("bad JSON: not JSON", "POST", "/sessions/new", b"hello", None, 400, "bad_request", None),
    ("bad JSON: trailing garbage", "POST", "/sessions/new", b'{"title":"a"} x', None, 400,
     "bad_request", None),
    ("bad JSON: single quotes", "POST", "/sessions/{sid}/messages", b"{'content':'x'}", None, 400,
     "bad_request", None),
    ("bad JSON: invalid UTF-8", "POST", "/sessions/{sid}/messages", b'{"content":"\xff\xfe"}',
     None, 400, "bad_request", None),
    ("bad JSON: NUL byte", "POST", "/sessions/{sid}/messages", b'{"content":"a\x00b"}', None,
     400, "bad_request", None),
    ("bad JSON: truncated message body", "POST", "/sessions/{sid}/messages", b'{"content":"x"',
     None, 400, "bad_request", None),
    # non-object JSON
    ("JSON array body", "POST", "/sessions/new", b"[]", None, 400, "bad_request", None),
    ("JSON array of object", "POST", "/sessions/{sid}/messages", b'[{"content":"x"}]', None, 400,
     "bad_request", None),
    ("JSON string body", "POST", "/sessions/new", b'"title"', None, 400, "bad_request", None),
    ("JSON number body", "POST", "/sessions/{sid}/messages", b"42", None, 400, "bad_request",
     None),
    ("JSON null body", "POST", "/sessions/new", b"null", None, 400, "bad_request", None),
    # wrong-typed or missing fields
    ("title is a number", "POST", "/sessions/new", b'{"title": 5}', None, 400, "invalid_field",
     "title"),
    ("title is an array", "POST", "/sessions/new", b'{"title": ["a"]}', None, 400,
     "invalid_field", "title"),
    ("title is an object", "POST", "/sessions/new", b'{"title": {}}', None, 400, "invalid_field",
     "title"),
    ("title is a bool", "POST", "/sessions/new", b'{"title": true}', None, 400, "invalid_field",
     "title"),
    ("model_id is a number", "POST", "/sessions/new", b'{"model_id": 7}', None, 400,
     "invalid_field", "model_id"),
    ("model_id is an object", "POST", "/sessions/new", b'{"model_id": {"a":1}}', None, 400,
     "invalid_field", "model_id"),
    ("content missing", "POST", "/sessions/{sid}/messages", b"{}", None, 400, "invalid_field",
     "content"),
    ("content missing (empty body)", "POST", "/sessions/{sid}/messages", b"", None, 400,
     "invalid_field", "content"),
    ("content empty", "POST", "/sessions/{sid}/messages", b'{"content": ""}', None, 400,
     "invalid_field", "content"),
    ("content is a number", "POST", "/sessions/{sid}/messages", b'{"content": 1}', None, 400,
     "invalid_field", "content"),
    ("content is null", "POST", "/sessions/{sid}/messages", b'{"content": null}', None, 400,
     "invalid_field", "content"),
    ("content is an array", "POST", "/sessions/{sid}/messages", b'{"content": ["x"]}', None, 400,
     "invalid_field", "content"),
    ("content is an object", "POST", "/sessions/{sid}/messages", b'{"content": {"t":"x"}}', None,
     400, "invalid_field", "content"),
    ("reply is a string", "POST", "/sessions/{sid}/messages", b'{"content":"x","reply":"yes"}',
     None, 400, "invalid_field", "reply"),
    ("reply is a number", "POST", "/sessions/{sid}/messages", b'{"content":"x","reply":1}', None,
     400, "invalid_field", "reply"),
    # bad query parameters
    ("limit=0", "GET", "/sessions?limit=0", None, None, 400, "invalid_field", "limit"),
    ("limit=501", "GET", "/sessions?limit=501", None, None, 400, "invalid_field", "limit"),
    ("limit=-1", "GET", "/sessions?limit=-1", None, None, 400, "invalid_field", "limit"),
    ("limit=abc", "GET", "/sessions?limit=abc", None, None, 400, "invalid_field", "limit"),
    ("limit=10x", "GET", "/sessions?limit=10x", None, None, 400, "invalid_field", "limit"),
    ("limit=1.5", "GET", "/sessions?limit=1.5", None, None, 400, "invalid_field", "limit"),
    ("limit empty", "GET", "/sessions?limit=", None, None, 400, "invalid_field", "limit"),
    ("limit huge", "GET", "/sessions?limit=99999999999999999999", None, None, 400,
     "invalid_field", "limit"),
    ("offset=-1", "GET", "/sessions?offset=-1", None, None, 400, "invalid_field", "offset"),
    ("offset=abc", "GET", "/sessions?offset=abc", None, None, 400, "invalid_field", "offset"),
    ("offset huge", "GET", "/sessions?offset=99999999999999999999", None, None, 400,
     "invalid_field", "offset"),
    ("session limit=0", "GET", "/sessions/{sid}?limit=0", None, None, 400, "invalid_field",
     "limit"),
    ("session limit=1001", "GET", "/sessions/{sid}?limit=1001", None, None, 400, "invalid_field",
     "limit"),
    ("session limit=abc", "GET", "/sessions/{sid}?limit=abc", None, None, 400, "invalid_field",
     "limit"),
    ("session before=abc", "GET", "/sessions/{sid}?before=abc", None, None, 400, "invalid_field",
     "before"),
    ("session before=1.5", "GET", "/sessions/{sid}?before=1.5", None, None, 400, "invalid_field",
     "before"),
    ("session before empty", "GET", "/sessions/{sid}?before=", None, None, 400, "invalid_field",
     "before"),
    # unknown routes
    ("unknown route /nope", "GET", "/nope", None, None, 404, "not_found", None),
    ("unknown route /sessionsx", "GET", "/sessionsx", None, None, 404, "not_found", None),
    ("unknown route /api/sessions", "GET", "/api/sessions", None, None, 404, "not_found", None),
    ("unknown sub-route", "GET", "/sessions/{sid}/nope", None, None, 404, "not_found", None),
    ("unknown POST sub-route", "POST", "/sessions/{sid}/nope", b"{}", None, 404, "not_found",
     None),
    ("too deep", "GET", "/sessions/{sid}/messages/1/x", None, None, 404, "not_found", None),
    ("POST to unknown route", "POST", "/nope", b"{}", None, 404, "not_found", None),
    # unknown sessions
    ("unknown session GET", "GET", "/sessions/0000000000000000", None, None, 404,
     "session_not_found", None),
    ("unknown session messages", "POST", "/sessions/0000000000000000/messages",
     b'{"content":"x"}', None, 404, "session_not_found", None),
    # wrong Content-Type on a POST with a body
    ("text/plain body", "POST", "/sessions/new", b"{}", {"Content-Type": "text/plain"}, 415,
     "unsupported_media_type", None),
    ("form body", "POST", "/sessions/{sid}/messages", b"content=x",
     {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", None),
    ("multipart body", "POST", "/sessions/{sid}/messages", b"--b\r\n\r\nx\r\n--b--\r\n",
     {"Content-Type": "multipart/form-data; boundary=b"}, 415, "unsupported_media_type", None),
    ("no Content-Type with a body", "POST", "/sessions/{sid}/messages", b'{"content":"x"}',
     {"Content-Type": None}, 415, "unsupported_media_type", None),
    ("application/jsonx", "POST", "/sessions/new", b"{}", {"Content-Type": "application/jsonx"},
     415, "unsupported_media_type", None),
    ("text/json", "POST", "/sessions/new", b"{}", {"Content-Type": "text/json"}, 415,
     "unsupported_media_type", None),
]

# (name, method, path, methods Allow must list)
WRONG_METHODS = [
    ("PUT /sessions", "PUT", "/sessions", {"GET"}),
    ("DELETE /sessions", "DELETE", "/sessions", {"GET"}),
    ("POST /sessions", "POST", "/sessions", {"GET"}),
    ("PUT /sessions/{sid}", "PUT", "/sessions/{sid}", {"GET", "PATCH", "DELETE"}),
    ("POST /sessions/{sid}", "POST", "/sessions/{sid}", {"GET", "PATCH", "DELETE"}),
    ("PATCH /sessions", "PATCH", "/sessions", {"GET"}),
    ("GET /sessions/{sid}/clear", "GET", "/sessions/{sid}/clear", {"POST"}),
    ("DELETE /sessions/{sid}/clear", "DELETE", "/sessions/{sid}/clear", {"POST"}),
    ("PUT /sessions/{sid}/messages", "PUT", "/sessions/{sid}/messages", {"POST"}),
    ("DELETE /sessions/{sid}/messages", "DELETE", "/sessions/{sid}/messages", {"POST"}),
    ("POST /health", "POST", "/health", {"GET"}),
    ("DELETE /stats", "DELETE", "/stats", {"GET"}),
    ("POST /", "POST", "/", {"GET"}),
]


def run_table(t, rest, sid):
    for name, method, path, raw, headers, status, code, field in CASES:
        path = path.replace("{sid}", sid)
        with t.section(name):
            r = rest.request(method, path, raw=raw, headers=headers)
            check_error(t, "%s (%s %s)" % (name, method, path[:40]), r, status, code, field)
    # nothing the table sent was stored
    d = rest.get("/sessions/%s" % sid).body
    t.eq("bad input: no message was stored by any rejected request", d.get("message_count"), 0)


def run_wrong_methods(t, rest, sid):
    for name, method, path, allowed in WRONG_METHODS:
        path = path.replace("{sid}", sid)
        with t.section(name):
            r = rest.request(method, path, raw=b"{}" if method in ("POST", "PUT", "PATCH")
                             else None)
            check_error(t, name, r, 405, "method_not_allowed")
            allow = {m.strip().upper() for m in r.headers.get("allow", "").split(",") if m.strip()}
            t.ok("%s: Allow lists %s" % (name, sorted(allowed)), allowed <= allow,
                 "Allow: %r" % r.headers.get("allow"))
            t.ok("%s: Allow does not list %s" % (name, method), method not in allow,
                 "Allow: %r" % r.headers.get("allow"))
    # a 405 changed nothing
    d = rest.get("/sessions/%s" % sid)
    t.eq("wrong methods: the session survived PUT/POST on it", d.status, 200)


def run_ok_content_types(t, rest, sid):
    for ctype in ("application/json; charset=utf-8", "application/json;charset=UTF-8",
                  "Application/JSON"):
        r = rest.request("POST", "/sessions/%s/messages" % sid, raw=b'{"content":"ct"}',
                         headers={"Content-Type": ctype})
        t.eq("Content-Type %r accepted: 201" % ctype, r.status, 201)
    r = rest.request("POST", "/sessions/new", raw=b"", headers={"Content-Type": "text/plain"})
    t.eq("empty body with text/plain counts as {}: 201", r.status, 201)
    r = rest.request("POST", "/sessions/new", raw=b"", headers={"Content-Type": None})
    t.eq("empty body without Content-Type counts as {}: 201", r.status, 201)
    r = rest.request("POST", "/sessions/%s/clear" % sid, raw=b"",
                     headers={"Content-Type": None})
    t.eq("clear with empty body and no Content-Type: 200", r.status, 200)


def body_of_size(n, key="content"):
    """A valid JSON object of exactly n bytes: {"content":"xxx..."}."""
    head = ('{"%s":"' % key).encode()
    tail = b'"}'
    return head + b"x" * (n - len(head) - len(tail)) + tail


def padded_empty_object(n):
    """'{}' followed by spaces, exactly n bytes: valid JSON, no fields."""
    return b"{}" + b" " * (n - 2)


def chunked_post(port, path, total, chunk=512, timeout=10):
    """POST with Transfer-Encoding: chunked (no Content-Length); returns (status, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % (path, port))
                  .encode())
        data = body_of_size(total)
        try:
            for i in range(0, len(data), chunk):
                piece = data[i:i + chunk]
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer 413 and close before reading everything
        resp = http.client.HTTPResponse(s)
        resp.begin()
        h = {k.lower(): v for k, v in resp.getheaders()}
        return parley.Response((resp.status, h, parley._decode_body(h, resp.read())))
    finally:
        s.close()


def run_size_limits(t):
    small = Rest(t, flags={"--max-message-size": 1024}, name="rest-1k")
    sid = small.new_session()
    r = small.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(1024))
    t.eq("--max-message-size 1024: a 1024-byte body passes (201)", r.status, 201)
    t.eq("--max-message-size 1024: its content stored whole",
         len(r.body.get("content", "")) if isinstance(r.body, dict) else None, 1024 - 14)
    r = small.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(1025))
    check_error(t, "--max-message-size 1024: a 1025-byte body", r, 413, "payload_too_large")
    r = small.request("POST", "/sessions/new", raw=padded_empty_object(1024))
    t.eq("--max-message-size 1024: POST /sessions/new 1024 bytes passes", r.status, 201)
    r = small.request("POST", "/sessions/new", raw=padded_empty_object(1025))
    check_error(t, "--max-message-size 1024: POST /sessions/new 1025 bytes", r, 413,
                "payload_too_large")
    r = small.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(200000))
    check_error(t, "--max-message-size 1024: a 200 kB body", r, 413, "payload_too_large")
    r = small.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(1025),
                      headers={"Content-Type": "text/plain"})
    t.ok("--max-message-size 1024: oversize text/plain body refused (413 or 415)",
         r.status in (413, 415), "status %r" % r.status)
    with t.section("chunked upload over the limit"):
        r = chunked_post(small.port, "/sessions/%s/messages" % sid, 3000)
        check_error(t, "--max-message-size 1024: chunked 3000-byte body", r, 413,
                    "payload_too_large")
    with t.section("chunked upload under the limit"):
        r = chunked_post(small.port, "/sessions/%s/messages" % sid, 1000, chunk=100)
        t.eq("--max-message-size 1024: chunked 1000-byte body passes (201)", r.status, 201)
    d = small.get("/sessions/%s" % sid).body
    t.eq("--max-message-size 1024: only the accepted messages were stored",
         d.get("message_count"), 2)
    t.eq("--max-message-size 1024: still healthy after the refusals",
         small.get("/health").status, 200)
    small.stop()

    env_small = Rest(t, env={"PARLEY_MAX_MESSAGE_SIZE": 512}, name="rest-env-512")
    sid = env_small.new_session()
    t.eq("PARLEY_MAX_MESSAGE_SIZE=512: 512 bytes pass",
         env_small.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(512)).status,
         201)
    t.eq("PARLEY_MAX_MESSAGE_SIZE=512: 513 bytes refused",
         env_small.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(513)).status,
         413)
    env_small.stop()


def run_default_limit(t, rest, sid):
    r = rest.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(65536))
    t.eq("default limit: a 65536-byte body passes (201)", r.status, 201)
    r = rest.request("POST", "/sessions/%s/messages" % sid, raw=body_of_size(65537))
    check_error(t, "default limit: a 65537-byte body", r, 413, "payload_too_large")


def main(t):
    rest = Rest(t)
    sid = rest.new_session(title="bad input target")
    with t.section("table"):
        run_table(t, rest, sid)
    with t.section("wrong methods"):
        run_wrong_methods(t, rest, sid)
    with t.section("accepted content types"):
        run_ok_content_types(t, rest, sid)
    with t.section("default size limit"):
        run_default_limit(t, rest, sid)
    with t.section("raw garbage on the socket"):
        for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
                     b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", rest.port), timeout=2) as s:
                try:
                    s.sendall(junk)
                    s.recv(4096)
                except OSError:
                    pass
        t.eq("raw garbage: server still answers", rest.get("/health").status, 200)
    with t.section("alive after bad input"):
        t.eq("after all bad input: GET /health 200", rest.get("/health").status, 200)
        t.ok("after all bad input: process still running", rest.alive(), "exited")
    rest.stop()
    with t.section("size limits"):
        run_size_limits(t)


parley.run(main)
