"""openai provider failures and aborts, against the fake server (tests/lib/llm_fake.py):
refused connection, unknown host, HTTP 401/429/500 with OpenAI's JSON error body and 502
with an HTML body, a malformed data line, an error object mid-stream, a disconnect
mid-stream (chunked and Connection: close), a hung server (--llm-idle-timeout-s), a reply
over --llm-timeout-s: each an `error` llm_error with the documented message, the user
message stored, a partial reply stored as incomplete, and the session working afterwards.
Then `stop` closing the upstream connection within 100 ms, pings answered quickly while
another session streams, and DELETE / clear / SIGTERM aborting the upstream transfer."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, check_reply  # noqa: E402
from llm_fake import (OPENAI_KEY_ERROR, OPENAI_RATE_ERROR, OPENAI_SERVER_ERROR,  # noqa: E402
                      FakeLLM, Script, closed_port)
from llm_support import (chunk_texts, connect, failure_case, llm_broker, normal_reply,  # noqa: E402
                         ping_rtt, rows, wait_chunk)

MODEL = "fail-model"


def slow(n=30, interval=0.2):
    return Script(["w%d " % i for i in range(n)], interval=interval)


def test_http_failures(t, fake):
    url = fake.url_openai
    b = llm_broker(t, "openai", url, llm_model=MODEL, llm_api_key="sk-x",
                   llm_idle_timeout_s="1", llm_timeout_s="3")
    db = b.db
    c = connect(b, "F")
    sid = c.create_session()
    pre = "LLM server at %s " % url
    normal_reply(t, fake, c, sid, db, "a first normal reply", Script(["Fine ", "start"]))

    failure_case(t, fake, c, sid, db, "HTTP 401",
                 Script(status=401, error_body=OPENAI_KEY_ERROR),
                 pre + "answered HTTP 401: Invalid API key")
    failure_case(t, fake, c, sid, db, "HTTP 429",
                 Script(status=429, error_body=OPENAI_RATE_ERROR),
                 pre + "answered HTTP 429: Rate limit reached for requests")
    failure_case(t, fake, c, sid, db, "HTTP 500",
                 Script(status=500, error_body=OPENAI_SERVER_ERROR),
                 pre + "answered HTTP 500: The server had an error while processing your "
                 "request")
    html = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 300 + "</body>"
    failure_case(t, fake, c, sid, db, "HTTP 502 with an HTML body",
                 Script(status=502, error_body=html),
                 pre + "answered HTTP 502: " + html[:200])
    failure_case(t, fake, c, sid, db, "malformed line first",
                 Script([], after="malformed"), pre + "sent a malformed stream: ",
                 contains=True, closed=True)
    failure_case(t, fake, c, sid, db, "malformed line mid-stream",
                 Script(["Half", "way "], after="malformed"), pre + "sent a malformed stream: ",
                 partial="Halfway ", contains=True, closed=True)
    failure_case(t, fake, c, sid, db, "error object first",
                 Script([], after="error", error_message="Model is loading"),
                 pre + "reported an error: Model is loading")
    failure_case(t, fake, c, sid, db, "error object mid-stream",
                 Script(["Some", " words"], after="error"),
                 pre + "reported an error: The server is overloaded", partial="Some words")
    failure_case(t, fake, c, sid, db, "disconnect mid-stream (chunked)",
                 Script(["Cut", " short"], after="disconnect"),
                 pre + "closed the connection before the reply was complete",
                 partial="Cut short")
    failure_case(t, fake, c, sid, db, "disconnect mid-stream (Connection: close, no [DONE])",
                 Script(["No", " done"], after="disconnect", framing="close"),
                 pre + "closed the connection before the reply was complete",
                 partial="No done")
    failure_case(t, fake, c, sid, db, "hang after the headers",
                 Script([], after="hang", role_chunk=False),
                 pre + "sent nothing for 1 s; giving up", closed=True)
    failure_case(t, fake, c, sid, db, "hang mid-stream",
                 Script(["Then ", "silence"], after="hang"),
                 pre + "sent nothing for 1 s; giving up", partial="Then silence", closed=True)
    failure_case(t, fake, c, sid, db, "reply over --llm-timeout-s",
                 slow(40, 0.25), pre + "did not finish within 3 s; giving up",
                 partial=True, closed=True)
    users = [r["content"] for r in rows(db, sid) if r["role"] == "user"]
    t.eq("every user message is stored once, in order", len(users), 27)
    t.eq("the stored user messages alternate failure, normal", users[1:3],
         ["HTTP 401", "HTTP 401, then a normal reply"])
    c.close()
    b.stop()


def test_connect_failures(t):
    port = closed_port()
    url = "http://127.0.0.1:%d/v1" % port
    b = llm_broker(t, "openai", url, llm_model=MODEL)
    c = connect(b, "R")
    sid = c.create_session()
    failure_case(t, _NoFake(), c, sid, b.db, "refused connection", Script(),
                 "LLM server at %s refused the connection; is it running?" % url, after=False)
    # the server comes up on that port: the same connection and session now work
    real = FakeLLM(port=port)
    try:
        normal_reply(t, real, c, sid, b.db, "once the LLM server is up",
                     Script(["Up ", "now"]))
    finally:
        real.close()
    c.close()
    b.stop()

    url = "http://parley-nonexistent.invalid/v1"
    b = llm_broker(t, "openai", url, llm_model=MODEL)
    c = connect(b, "D")
    sid = c.create_session()
    failure_case(t, _NoFake(), c, sid, b.db, "unknown host", Script(),
                 "cannot resolve the host of the LLM server at %s" % url, after=False)
    t.ok("unknown host: the connection still answers pings", c.ping_ok())
    c.close()
    b.stop()


class _NoFake:
    """Stands in for FakeLLM where no server listens."""

    def play(self, script):
        pass

    def count(self):
        return 0


def stop_once(t, fake, c, sid, db, attempt):
    fake.play(slow(30, 0.2))
    n = fake.count()
    c.chat("stop me %d" % attempt)
    wait_chunk(c, sid, 2)
    req = fake.requests[n]
    t0 = time.monotonic()
    c.send({"type": "stop"})
    frames = c.read_reply(sid, timeout=10)
    closed = fake.wait_closed(req, 5) and req.closed_at is not None
    ms = (req.closed_at - t0) * 1000 if closed else None
    t.diag("stop attempt %d: the LLM server saw its connection closed %s after stop was sent "
           "(%s)" % (attempt, "%.1f ms" % ms if ms is not None else "never", req.close_how))
    return ms, frames


def test_stop_and_aborts(t, fake):
    rest = Rest(t)
    b = llm_broker(t, "openai", fake.url_openai, tmpdir=rest.tmpdir, port=rest.ws_port,
                   llm_model=MODEL)
    db = b.db
    c = connect(b, "S")
    sid = c.create_session()

    # stop: upstream closed within 100 ms (best of up to 3), stopped:true, partial stored
    best = None
    for attempt in range(1, 4):
        ms, frames = stop_once(t, fake, c, sid, db, attempt)
        if attempt == 1:
            pieces = slow(30, 0.2).pieces
            check_reply(t, "stop", frames, sid, text="".join(pieces), chunks=pieces,
                        stopped=True)
            row = rows(db, sid)[-1]
            t.eq("stop: stored as stopped with the text streamed",
                 (row.get("role"), row.get("status"), row.get("content")),
                 ("assistant", "stopped", "".join(chunk_texts(frames))))
            t.eq("stop: nothing more arrives", c.quiet(0.5, session_id=sid), [])
        if ms is not None and (best is None or ms < best):
            best = ms
        if best is not None and best <= 100:
            break
    t.ok("stop: the LLM server sees its connection closed within 100 ms of stop",
         best is not None and best <= 100, "best %s ms" % best)
    normal_reply(t, fake, c, sid, db, "after stop", Script(["Fresh ", "reply"]))

    # pings of another session are answered at once while a reply streams slowly
    p = connect(b, "P")
    p.create_session()
    fake.play(slow(30, 0.2))
    c.chat("slow for the pings")
    wait_chunk(c, sid, 1)
    rtts = []
    for _ in range(5):
        rtts.append(ping_rtt(p) * 1000)
        time.sleep(0.05)
    t.diag("ping round trips while streaming: %s ms" % ", ".join("%.1f" % x for x in rtts))
    t.ok("ping from another session while a reply streams: under 50 ms (best of 5)",
         min(rtts) < 50, "%r" % rtts)
    c.send({"type": "stop"})
    c.read_reply(sid, timeout=10)

    # DELETE the session while a reply streams: the upstream transfer is aborted
    for how in ("delete", "clear"):
        s2 = c.create_session()
        fake.play(slow(30, 0.2))
        n = fake.count()
        c.chat("%s me" % how)
        wait_chunk(c, s2, 2)
        req = fake.requests[n]
        t0 = time.monotonic()
        if how == "delete":
            r = rest.delete("/sessions/%s" % s2)
            t.eq("DELETE while streaming: 200", r.status, 200)
            c.expect(timeout=5, type="session_update", update_type="session_deleted",
                     session_id=s2)
        else:
            r = rest.post("/sessions/%s/clear" % s2)
            t.eq("clear while streaming: 200", r.status, 200)
            c.expect(timeout=5, type="session_update", update_type="history_cleared",
                     session_id=s2)
        closed = fake.wait_closed(req, 5) and req.closed_at is not None
        t.ok("%s while streaming: the LLM server sees its connection closed" % how, closed,
             req.close_how)
        if closed:
            t.diag("%s: upstream closed %.1f ms after the REST call" % (
                how, (req.closed_at - t0) * 1000))
        late = c.quiet(0.6, type="response_complete", session_id=s2)
        t.eq("%s while streaming: no response_complete" % how, late, [])
        t.eq("%s while streaming: nothing stored" % how, rows(db, s2), [])
        c.take_all(session_id=s2)

    # SIGTERM while a reply streams: the upstream transfer is aborted, exit 0
    fake.play(slow(30, 0.2))
    n = fake.count()
    c.chat("shutdown during this", session_id=sid)
    wait_chunk(c, sid, 2)
    req = fake.requests[n]
    t0 = time.monotonic()
    b.stop()
    took = time.monotonic() - t0
    closed = fake.wait_closed(req, 5) and req.closed_at is not None
    t.ok("SIGTERM while streaming: the LLM server sees its connection closed", closed,
         req.close_how)
    t.ok("SIGTERM while streaming: the broker exits within 5 s", took < 5, "%.1f s" % took)
    rest.stop()


def main(t):
    fake = FakeLLM()
    with t.section("http failures"):
        test_http_failures(t, fake)
    with t.section("connect failures"):
        test_connect_failures(t)
    with t.section("stop and aborts"):
        test_stop_and_aborts(t, fake)
    fake.close()


if __name__ == "__main__":
    parley.run(main)
