"""The gemini provider against a fake Gemini server (tests/lib/llm_fake.py): the request
(path models/{model}:streamGenerateContent?alt=sse, x-goog-api-key, contents with roles
user/model, systemInstruction), chunks equal to the streamed parts, usageMetadata stored,
multi-turn context, SSE quirks, the session's own model, no key -> no header, stop closing
the upstream connection, and the gemini failures: HTTP 400 with Google's error body, a
blocked prompt, a malformed line, a disconnect mid-stream. Every chat here carries its
connection's default name (SPEC 9: the "Name: " prefix, the room sentence in the
systemInstruction; 38_llm_authors.py tests the names themselves)."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import check_reply  # noqa: E402
from llm_fake import GEMINI_KEY_ERROR, FakeLLM, Script  # noqa: E402
from llm_support import (ROOM, chat_and_read, chunk_texts, connect,  # noqa: E402
                         failure_case, guest, llm_broker, rows, system_text, wait_chunk)

MODEL = "gemini-test-flash"
KEY = "gk-test-456"
PROMPT = "You are a helpful assistant."


def u(text, who=None):
    """A user message as sent: with an author (SPEC 9), the "Name: " prefix (Gemini has no
    name field)."""
    return {"role": "user", "parts": [{"text": "%s: %s" % (who, text) if who else text}]}


def m(text):
    return {"role": "model", "parts": [{"text": text}]}


def check_request(t, name, req, model, contents, key=KEY, prompt=system_text(PROMPT)):
    """prompt: the systemInstruction text expected (here with authors: the room sentence
    after PROMPT), None for none."""
    t.eq("%s: POST" % name, req.method, "POST")
    t.eq("%s: path" % name, req.path, "/v1beta/models/%s:streamGenerateContent" % model)
    t.eq("%s: query alt=sse (no key in the URL)" % name, req.query, "alt=sse")
    ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
    t.eq("%s: Content-Type application/json" % name, ctype, "application/json")
    t.eq("%s: x-goog-api-key" % name, req.header("x-goog-api-key"), key)
    t.eq("%s: no Authorization header" % name, req.header("authorization"), None)
    body = req.body
    if not t.ok("%s: body is a JSON object" % name, isinstance(body, dict),
                repr(req.raw_body[:300])):
        return
    t.keys("%s: body keys" % name, body,
           {"contents", "systemInstruction"} if prompt else {"contents"})
    t.eq("%s: contents" % name, body.get("contents"), contents)
    if prompt:
        t.eq("%s: systemInstruction" % name, body.get("systemInstruction"),
             {"parts": [{"text": prompt}]})


def check_row(t, name, row, content, model=MODEL, status="complete", usage=None):
    t.eq("%s: stored role" % name, row.get("role"), "assistant")
    t.eq("%s: stored content" % name, row.get("content"), content)
    t.eq("%s: stored model" % name, row.get("model"), model)
    t.eq("%s: stored status" % name, row.get("status"), status)
    t.eq("%s: stored prompt_tokens" % name, row.get("prompt_tokens"), usage and usage[0])
    t.eq("%s: stored completion_tokens" % name, row.get("completion_tokens"),
         usage and usage[1])
    dms = row.get("duration_ms")
    t.ok("%s: stored duration_ms > 0" % name, type(dms) is int and dms > 0, repr(dms))


def reply_case(t, fake, c, sid, db, name, script, usage=None, model=MODEL, exact_chunks=True):
    fake.play(script)
    n = fake.count()
    _, frames = chat_and_read(c, sid, name)
    check_reply(t, name, frames, sid, text=script.text,
                chunks=script.pieces if exact_chunks else chunk_texts(frames))
    t.eq("%s: chunks concatenate to the reply" % name, "".join(chunk_texts(frames)),
         script.text)
    t.eq("%s: one request" % name, fake.count(), n + 1)
    got = rows(db, sid)
    last = got[-1] if got else {}
    t.eq("%s: the reply is the last stored message" % name, last.get("id"),
         frames[-1].get("message_id"))
    check_row(t, name, last, script.text, model=model, usage=usage)
    return fake.requests[n] if fake.count() > n else None


def test_main(t, fake):
    b = llm_broker(t, "gemini", fake.url_gemini, llm_model=MODEL, llm_api_key=KEY,
                   system_prompt=PROMPT, llm_idle_timeout_s="5")
    db = b.db
    url = fake.url_gemini
    c = connect(b, "G")
    G = guest(c.id)  # every chat of c carries its default name
    t.eq("connected: server_info.model", (c.connected.get("server_info") or {}).get("model"),
         MODEL)
    ev = c.request({"type": "create_session"}, type="session_created")
    sid = ev["session_id"]
    t.eq("session_created: model", ev.get("model"), MODEL)

    s = Script(["Bonjour", ", le", " monde ✓"], usage=(11, 4))
    req = reply_case(t, fake, c, sid, db, "gemini first turn", s, usage=(11, 4))
    if req:
        check_request(t, "gemini first request", req, MODEL, [u("gemini first turn", G)])
    s2 = Script(["Second", " answer"], usage=(30, 2))
    req = reply_case(t, fake, c, sid, db, "gemini second turn", s2, usage=(30, 2))
    if req:
        check_request(t, "gemini second request: roles user/model", req, MODEL, [
            u("gemini first turn", G), m(s.text), u("gemini second turn", G)])
    s3 = Script(["LF ", "split ", "lines"], crlf=False, split=True, keepalive=True)
    reply_case(t, fake, c, sid, db, "gemini LF split keep-alive", s3)
    s4 = Script(["CRLF ", "split"], crlf=True, split=True, usage=(2, 2))
    reply_case(t, fake, c, sid, db, "gemini CRLF split", s4, usage=(2, 2))
    s5 = Script(["closed ", "framing"], framing="close")
    reply_case(t, fake, c, sid, db, "gemini Connection: close framing", s5)
    s6 = Script(["Several ", "parts ", "per event"], multipart=True, usage=(9, 9))
    reply_case(t, fake, c, sid, db, "gemini several parts per event", s6, usage=(9, 9),
               exact_chunks=False)

    # failures
    failure_case(t, fake, c, sid, db, "gemini bad key",
                 Script(status=400, error_body=GEMINI_KEY_ERROR),
                 "LLM server at %s answered HTTP 400: API key not valid" % url)
    failure_case(t, fake, c, sid, db, "gemini blocked prompt", Script(after="block"),
                 "the model blocked the prompt (SAFETY)", contains=True)
    failure_case(t, fake, c, sid, db, "gemini malformed line",
                 Script(["Some ", "text"], after="malformed"),
                 "LLM server at %s sent a malformed stream: " % url, partial="Some text",
                 contains=True, closed=True)
    failure_case(t, fake, c, sid, db, "gemini disconnect mid-stream",
                 Script(["Cut ", "off "], after="disconnect"),
                 "LLM server at %s closed the connection before the reply was complete" % url,
                 partial="Cut off ")

    # stop: the fake sees its connection closed, the partial text is stored as stopped
    fake.play(Script(["p%d " % i for i in range(40)], interval=0.2))
    n = fake.count()
    c.chat("gemini stop me")
    wait_chunk(c, sid, 2)
    req = fake.requests[n] if fake.count() > n else None
    t0 = time.monotonic()
    c.send({"type": "stop"})
    frames = c.read_reply(sid, timeout=10)
    pieces = fake._default.pieces
    check_reply(t, "gemini stop", frames, sid, text="".join(pieces), chunks=pieces, stopped=True)
    closed = req is not None and fake.wait_closed(req, 5)
    t.ok("gemini stop: the LLM server sees the connection closed", closed,
         req and req.close_how)
    if closed:
        t.diag("gemini stop: upstream closed %.1f ms after stop was sent" % (
            (req.closed_at - t0) * 1000))
    texts = chunk_texts(frames)
    row = rows(db, sid)[-1]
    t.eq("gemini stop: stored status stopped", row.get("status"), "stopped")
    t.eq("gemini stop: stored text = the chunks sent", row.get("content"), "".join(texts))
    c.close()
    b.stop()


def test_nokey(t, fake):
    b = llm_broker(t, "gemini", fake.url_gemini, llm_model=MODEL, llm_models="gemini-other")
    c = connect(b, "N")
    N = guest(c.id)
    ev = c.request({"type": "create_session", "model_id": "gemini-other"}, type="session_created")
    sid = ev["session_id"]
    s = Script(["no ", "key"])
    req = reply_case(t, fake, c, sid, b.db, "gemini without key", s, model="gemini-other")
    if req:
        check_request(t, "gemini without key, session model", req, "gemini-other",
                      [u("gemini without key", N)], key=None, prompt=ROOM)
    c.close()
    b.stop()


def main(t):
    fake = FakeLLM()
    with t.section("gemini main"):
        test_main(t, fake)
    with t.section("gemini no key"):
        test_nokey(t, fake)
    fake.close()


if __name__ == "__main__":
    parley.run(main)
