"""A fake LLM server for Parley's provider tests: standard library only.

FakeLLM listens on 127.0.0.1 (a free port) with a ThreadingHTTPServer and speaks the two
wire protocols the broker's drivers use, over real HTTP:

- OpenAI-compatible: `POST /v1/chat/completions` with `"stream": true` answers
  `text/event-stream`: `data: {chat.completion.chunk}` events, a final chunk with
  finish_reason "stop", optionally a usage chunk (`"choices": []`, or `null` as vLLM does),
  then `data: [DONE]`.
- Gemini: `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` answers SSE
  `data: {"candidates": [...], "usageMetadata": {...}}` events; the stream simply ends.

Every request is recorded (FakeLLM.requests: Req objects with method, path, query, headers,
body parsed from JSON, time received, and what happened to the connection). What is played
is a Script chosen with FakeLLM.play(script) (for every following request) or
FakeLLM.queue(script, ...) (for the next requests, one each; then the play() default).

Streams use chunked transfer encoding by default (Script(framing="close") sends
`Connection: close` and no length instead), with a flush after every write. While it waits
between writes the server watches the socket, so it notices at once when the client closes
the connection (Req.closed_at, time.monotonic() of this process).
"""

import json
import select
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPENAI_KEY_ERROR = {"error": {"message": "Invalid API key", "type": "invalid_request_error"}}
OPENAI_RATE_ERROR = {"error": {"message": "Rate limit reached for requests",
                               "type": "requests", "code": "rate_limit_exceeded"}}
OPENAI_SERVER_ERROR = {"error": {"message": "The server had an error while processing "
                                            "your request", "type": "server_error"}}
GEMINI_KEY_ERROR = {"error": {"code": 400, "message": "API key not valid",
                              "status": "INVALID_ARGUMENT"}}


class Script:
    """What the fake answers to one request.

    pieces: the visible text pieces, one event each (openai delta.content, gemini part text).
    interval: seconds to wait before each piece (and before the end).
    reasoning: reasoning pieces sent (each its own event) before the text pieces, in
      reasoning_field ("reasoning_content" or "reasoning"); gemini ignores them.
    usage: (prompt_tokens, completion_tokens) or None. openai: usage_style "empty"
      (a last chunk with "choices": []), "null" ("choices": null), "final" (inside the
      finish_reason chunk); gemini: usageMetadata, the full counts in the last event.
    role_chunk: openai sends first a delta {"role": "assistant", "content": ""}.
    split: every event is written in two halves with a flush and split_pause between.
    crlf: lines end with \\r\\n (default: gemini yes, openai no).
    keepalive: a `: keep-alive` comment line and an empty event before every event.
    multiline: openai: each event's JSON is sent as two `data:` lines (joined with \\n).
    status/error_body: answer this HTTP status with this body (dict -> JSON, str/bytes as
      they are) instead of a stream.
    after: what ends the stream after the pieces: "done" (normal end), "malformed" (a data
      line that is not JSON), "error" (an error object, then [DONE]), "disconnect" (the
      socket is closed, no [DONE] nor last chunk of the chunked encoding), "hang" (nothing
      more until the client goes away or hang_max passes), "block" (gemini: promptFeedback
      blockReason, no candidates).
    framing: "chunked" or "close".
    server_model: openai: the "model" every chunk names (default: the model asked for).
    multipart: gemini: each piece is sent as an event of two parts (the piece cut in half).
    """

    def __init__(self, pieces=(), interval=0.0, reasoning=(), reasoning_field="reasoning_content",
                 usage=None, usage_style="empty", role_chunk=True, split=False, split_pause=0.05,
                 crlf=None, keepalive=False, multiline=False, status=200, error_body=None,
                 after="done", error_message="The server is overloaded", block_reason="SAFETY",
                 hang_max=60.0, framing="chunked", headers_delay=0.0, multipart=False,
                 server_model=None):
        self.server_model = server_model
        self.pieces = list(pieces)
        self.interval = interval
        self.reasoning = list(reasoning)
        self.reasoning_field = reasoning_field
        self.usage = usage
        self.usage_style = usage_style
        self.role_chunk = role_chunk
        self.split = split
        self.split_pause = split_pause
        self.crlf = crlf
        self.keepalive = keepalive
        self.multiline = multiline
        self.status = status
        self.error_body = error_body
        self.after = after
        self.error_message = error_message
        self.block_reason = block_reason
        self.hang_max = hang_max
        self.framing = framing
        self.headers_delay = headers_delay
        self.multipart = multipart

    @property
    def text(self):
        return "".join(self.pieces)


class Req:
    """One request the fake received."""

    def __init__(self, method, raw_path, headers, raw_body):
        self.method = method
        self.raw_path = raw_path
        u = urllib.parse.urlsplit(raw_path)
        self.path = u.path
        self.query = u.query
        self.headers = {}
        for k, v in headers.items():
            self.headers[k.lower()] = v
        self.raw_body = raw_body
        try:
            self.body = json.loads(raw_body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            self.body = None
        self.received_at = time.monotonic()
        self.script = None
        self.first_write_at = None
        self.closed_at = None       # when the server saw the client close the connection
        self.close_how = None       # "eof", "reset", "write failed: ..."
        self.finished_at = None     # when the server finished playing its script
        self.ended = threading.Event()  # set when the handler is done with this request

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "Req(%s %s %s)" % (self.method, self.raw_path, json.dumps(self.body)[:300])


class ClientGone(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLM/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---------------------------------------------------------------- request
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = b""
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        fake = self.server.fake
        body = self._read_body()
        req = Req("POST", self.path, self.headers, body)
        provider = None
        if req.path.endswith("/chat/completions"):
            provider = "openai"
        elif req.path.endswith(":streamGenerateContent"):
            provider = "gemini"
        req.provider = provider
        script = fake._next_script()
        req.script = script
        with fake._cond:
            fake.requests.append(req)
            fake._cond.notify_all()
        try:
            if provider is None:
                self.close_connection = True
                self._json(404, {"error": {"message": "no route %s" % req.path}})
                return
            if script.status != 200:
                self.close_connection = True
                self._error(script)
                return
            self._stream(req, provider, script)
        except ClientGone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError) as e:
            self.close_connection = True
            req.closed_at = req.closed_at or time.monotonic()
            req.close_how = req.close_how or "write failed: %s" % type(e).__name__
        finally:
            req.finished_at = time.monotonic()
            req.ended.set()
            with fake._cond:
                fake._cond.notify_all()

    # ---------------------------------------------------------------- answers
    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, script):
        body = script.error_body
        if isinstance(body, (dict, list)):
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data = body.encode() if isinstance(body, str) else (body or b"")
            ctype = "text/html"
        self.send_response(script.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _watch(self, req, seconds):
        """Waits `seconds` while watching the socket: ClientGone when the client closes."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([sock], [], [], min(left, 0.5))
            if r:
                try:
                    data = sock.recv(4096, socket.MSG_PEEK)
                except (ConnectionResetError, OSError) as e:
                    req.closed_at = time.monotonic()
                    req.close_how = "reset (%s)" % type(e).__name__
                    raise ClientGone() from None
                if not data:
                    req.closed_at = time.monotonic()
                    req.close_how = "eof"
                    raise ClientGone()
                sock.recv(len(data))  # a client sends nothing more; drop it

    def _write(self, req, data):
        if not data:
            return
        if req.script.framing == "chunked":
            data = b"%x\r\n%s\r\n" % (len(data), data)
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as e:
            req.closed_at = req.closed_at or time.monotonic()
            req.close_how = req.close_how or "write failed: %s" % type(e).__name__
            raise ClientGone() from None
        if req.first_write_at is None:
            req.first_write_at = time.monotonic()

    def _event(self, req, s, payload):
        """One SSE event `data: payload` (payload: str or dict), with the script's quirks."""
        nl = "\r\n" if s.crlf else "\n"
        if s.keepalive:
            self._write(req, (": keep-alive" + nl + nl).encode())
            self._write(req, nl.encode())  # an empty event
        if isinstance(payload, (dict, list)):
            text = json.dumps(payload)
        else:
            text = payload
        if s.multiline and text.startswith("{") and ", " in text:
            a, b = text.split(", ", 1)
            lines = "data: " + a + "," + nl + "data: " + b + nl
        else:
            lines = "data: " + text + nl
        ev = (lines + nl).encode("utf-8")
        if s.split:
            half = len(ev) // 2
            self._write(req, ev[:half])
            self._watch(req, s.split_pause)
            self._write(req, ev[half:])
        else:
            self._write(req, ev)

    def _stream(self, req, provider, s):
        if s.crlf is None:
            s.crlf = provider == "gemini"
        if s.headers_delay:
            self._watch(req, s.headers_delay)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        if s.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        if provider == "openai":
            self._openai(req, s)
        else:
            self._gemini(req, s)
        if s.after == "hang":
            self._watch(req, s.hang_max)
            self.close_connection = True
            return
        if s.after == "disconnect":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if s.framing == "chunked":
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
        self.close_connection = True

    def _openai(self, req, s):
        model = (req.body or {}).get("model") if isinstance(req.body, dict) else None
        model = s.server_model or model
        cid = "chatcmpl-fake%d" % id(req)
        created = int(time.time())

        def chunk(delta, finish=None, **extra):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": model, "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}]}
            c.update(extra)
            return c

        if s.role_chunk:
            self._event(req, s, chunk({"role": "assistant", "content": ""}))
        for r in s.reasoning:
            self._watch(req, s.interval)
            self._event(req, s, chunk({s.reasoning_field: r}))
        for p in s.pieces:
            self._watch(req, s.interval)
            self._event(req, s, chunk({"content": p}))
        self._watch(req, s.interval)
        if s.after == "malformed":
            self._event(req, s, '{"choices": [{"delta": {"content": "x"}')
            self._watch(req, 2.0)
            return
        if s.after == "error":
            self._event(req, s, {"error": {"message": s.error_message, "type": "server_error",
                                           "code": 503}})
            self._event(req, s, "[DONE]")
            return
        if s.after in ("disconnect", "hang"):
            return
        usage = None
        if s.usage:
            usage = {"prompt_tokens": s.usage[0], "completion_tokens": s.usage[1],
                     "total_tokens": s.usage[0] + s.usage[1]}
        if usage and s.usage_style == "final":
            self._event(req, s, chunk({}, "stop", usage=usage))
        else:
            self._event(req, s, chunk({}, "stop"))
            if usage:
                u = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model,
                     "choices": [] if s.usage_style == "empty" else None, "usage": usage}
                self._event(req, s, u)
        self._event(req, s, "[DONE]")

    def _gemini(self, req, s):
        if s.after == "block":
            self._event(req, s, {"promptFeedback": {"blockReason": s.block_reason,
                                                    "safetyRatings": []},
                                 "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
                                 "modelVersion": "gemini-fake"})
            return
        n = len(s.pieces)
        for i, p in enumerate(s.pieces):
            self._watch(req, s.interval)
            last = i == n - 1 and s.after == "done"
            parts = [{"text": p}]
            if s.multipart and len(p) > 1:
                parts = [{"text": p[:len(p) // 2]}, {"text": p[len(p) // 2:]}]
            cand = {"content": {"role": "model", "parts": parts}, "index": 0}
            if last:
                cand["finishReason"] = "STOP"
            ev = {"candidates": [cand], "modelVersion": "gemini-fake"}
            if s.usage:
                if last:
                    ev["usageMetadata"] = {"promptTokenCount": s.usage[0],
                                           "candidatesTokenCount": s.usage[1],
                                           "totalTokenCount": s.usage[0] + s.usage[1]}
                else:
                    ev["usageMetadata"] = {"promptTokenCount": s.usage[0],
                                           "totalTokenCount": s.usage[0]}
            self._event(req, s, ev)
        if s.after == "malformed":
            self._watch(req, s.interval)
            self._event(req, s, '{"candidates": [')
            self._watch(req, 2.0)
        elif s.after == "error":
            self._watch(req, s.interval)
            self._event(req, s, {"error": {"code": 503, "message": s.error_message,
                                           "status": "UNAVAILABLE"}})


class FakeLLM:
    """The fake server. url_openai / url_gemini are the base URLs to give --llm-url."""

    def __init__(self, script=None, port=0):
        self.requests = []
        self._cond = threading.Condition()
        self._default = script or Script(["Hello", " from", " the", " fake."])
        self._queue = []
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="fake-llm", daemon=True)
        self._thread.start()

    @property
    def url_openai(self):
        return "http://127.0.0.1:%d/v1" % self.port

    @property
    def url_gemini(self):
        return "http://127.0.0.1:%d/v1beta" % self.port

    def play(self, script):
        """Every following request (after the queued ones) gets this script."""
        with self._cond:
            self._default = script
            self._queue = []

    def queue(self, *scripts):
        with self._cond:
            self._queue.extend(scripts)

    def _next_script(self):
        with self._cond:
            return self._queue.pop(0) if self._queue else self._default

    def count(self):
        with self._cond:
            return len(self.requests)

    def wait_request(self, index, timeout=10.0):
        """The request number `index` (0-based), waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) <= index:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the fake LLM got %d requests, waited for #%d" % (
                        len(self.requests), index + 1))
                self._cond.wait(left)
            return self.requests[index]

    def wait_closed(self, req, timeout=10.0):
        """Waits until the handler of req is done; True when the client closed it."""
        req.ended.wait(timeout)
        return req.closed_at is not None

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port():
    """A loopback port with nothing listening (bound then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
