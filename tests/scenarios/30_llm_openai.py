"""The openai provider against a fake OpenAI-compatible server (tests/lib/llm_fake.py):
the request the broker sends (path, headers, body: model, stream, stream_options, system
prompt then history with roles), chunks equal to the streamed pieces, SSE quirks (lines
split across reads, CRLF, comments and empty events, multi-line data, Connection: close
framing), usage in its three shapes, reasoning kept out of the chunks and stored apart,
the session's own model, multi-turn context (also after a broker restart, and through
REST reply:true), queued chats, --context-messages, no key -> no Authorization. Every chat
here carries its connection's default name (SPEC 9: name + "Name: " prefix, the room
sentence after the system prompt; 38_llm_authors.py tests the names themselves)."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, check_reply  # noqa: E402
from llm_fake import FakeLLM, Script  # noqa: E402
from llm_support import (ROOM, chat_and_read, chunk_texts, connect, guest,  # noqa: E402
                         llm_broker, llm_name, rows, system_text)

MODEL = "fake-model-7b"
KEY = "sk-test-123"
PROMPT = "You are a terse assistant. Answer in one line."
BODY_KEYS = {"model", "stream", "stream_options", "messages"}


def u(text, who=None):
    """A user message as sent: with an author (SPEC 9), its name and the "Name: " prefix."""
    if who is None:
        return {"role": "user", "content": text}
    return {"role": "user", "name": llm_name(who), "content": "%s: %s" % (who, text)}


def a(text):
    return {"role": "assistant", "content": text}


def check_request(t, name, req, model, messages, key=KEY):
    t.eq("%s: POST" % name, req.method, "POST")
    t.eq("%s: path /v1/chat/completions" % name, req.path, "/v1/chat/completions")
    t.eq("%s: no query string" % name, req.query, "")
    ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
    t.eq("%s: Content-Type application/json" % name, ctype, "application/json")
    t.eq("%s: Accept text/event-stream" % name, req.header("accept"), "text/event-stream")
    t.eq("%s: Authorization" % name, req.header("authorization"),
         "Bearer %s" % key if key else None)
    body = req.body
    if not t.ok("%s: the body is a JSON object" % name, isinstance(body, dict),
                repr(req.raw_body[:300])):
        return
    t.keys("%s: body has exactly model, stream, stream_options, messages" % name, body,
           BODY_KEYS)
    t.eq("%s: model" % name, body.get("model"), model)
    t.eq("%s: stream true" % name, body.get("stream"), True)
    t.eq("%s: stream_options" % name, body.get("stream_options"), {"include_usage": True})
    t.eq("%s: messages" % name, body.get("messages"), messages)


def check_row(t, name, row, content, model=MODEL, status="complete", usage=None,
              reasoning=None):
    t.eq("%s: stored role assistant" % name, row.get("role"), "assistant")
    t.eq("%s: stored content" % name, row.get("content"), content)
    t.eq("%s: stored model" % name, row.get("model"), model)
    t.eq("%s: stored status" % name, row.get("status"), status)
    t.eq("%s: stored prompt_tokens" % name, row.get("prompt_tokens"),
         usage[0] if usage else None)
    t.eq("%s: stored completion_tokens" % name, row.get("completion_tokens"),
         usage[1] if usage else None)
    d = row.get("duration_ms")
    t.ok("%s: stored duration_ms > 0" % name, type(d) is int and d > 0, repr(d))
    if reasoning is None:
        t.ok("%s: no reasoning stored" % name, row.get("reasoning") in (None, ""),
             repr(row.get("reasoning")))
    else:
        t.eq("%s: stored reasoning" % name, row.get("reasoning"), reasoning)


def reply_case(t, fake, c, sid, db, name, script, text=None, chunks=None, usage=None,
               reasoning=None, model=MODEL, others=()):
    """Plays script for one chat from c; checks the reply frames (also at each of others)
    and the stored row. Returns (request, frames)."""
    fake.play(script)
    for o in others:
        o.clear()
    n = fake.count()
    _, frames = chat_and_read(c, sid, name)
    want_text = script.text if text is None else text
    want_chunks = script.pieces if chunks is None and text is None else chunks
    if want_chunks == "any":  # piece boundaries are the broker's business here
        want_chunks = chunk_texts(frames)
    check_reply(t, name, frames, sid, text=want_text, chunks=want_chunks)
    t.eq("%s: chunks concatenate to the scripted reply" % name, "".join(chunk_texts(frames)),
         want_text)
    for o in others:
        f2 = o.read_reply(sid)
        t.eq("%s: %s sees the same chunks" % (name, o.name), chunk_texts(f2),
             chunk_texts(frames))
    t.eq("%s: one request to the LLM" % name, fake.count(), n + 1)
    req = fake.requests[n] if fake.count() > n else None
    done = frames[-1]
    got = rows(db, sid)
    last = got[-1] if got else {}
    t.eq("%s: the reply is the last stored message (response_complete.message_id)" % name,
         last.get("id"), done.get("message_id"))
    check_row(t, name, last, want_text, model=model, usage=usage, reasoning=reasoning)
    return req, frames


def test_main(t, fake):
    rest = Rest(t)
    b = llm_broker(t, "openai", fake.url_openai, tmpdir=rest.tmpdir, port=rest.ws_port,
                   llm_models="other-model",
                   llm_model=MODEL, llm_api_key=KEY, system_prompt=PROMPT)
    db = b.db
    c = connect(b, "A")
    A = guest(c.id)  # every chat of c carries its default name
    t.eq("connected: server_info.model is the configured model",
         (c.connected.get("server_info") or {}).get("model"), MODEL)
    ev = c.request({"type": "create_session", "title": "llm"}, type="session_created")
    sid = ev["session_id"]
    t.eq("session_created: model is the configured model", ev.get("model"), MODEL)
    d = connect(b, "B")
    d.join(sid)
    hist = []
    SYS = {"role": "system", "content": system_text(PROMPT)}  # the room sentence after PROMPT

    # 1. a plain reply, usage in a last chunk with "choices": []
    s = Script(["Hello", ", world", "! How", " are you?"], usage=(17, 9))
    req, _ = reply_case(t, fake, c, sid, db, "first turn", s, usage=(17, 9), others=[d])
    check_request(t, "first turn request", req, MODEL, [
        SYS, u("first turn", A)])
    hist += [u("first turn", A), a(s.text)]

    # 2. multi-turn; usage with "choices": null (vLLM)
    s = Script(["Sure", ": ", "42", "."], usage=(40, 4), usage_style="null")
    req, _ = reply_case(t, fake, c, sid, db, "second turn", s, usage=(40, 4), others=[d])
    check_request(t, "second turn request: history with roles", req, MODEL,
                  [SYS] + hist + [u("second turn", A)])
    hist += [u("second turn", A), a(s.text)]

    # 3. usage inside the finish_reason chunk; SSE lines split across reads, CRLF,
    #    comment lines and empty events
    s = Script(["Split ", "lines ", "ñ ✓ 日本", " done"], usage=(5, 6), usage_style="final",
               split=True, crlf=True, keepalive=True)
    reply_case(t, fake, c, sid, db, "split CRLF keep-alive stream", s, usage=(5, 6))
    hist += [u("split CRLF keep-alive stream", A), a(s.text)]

    # 4. no usage at all -> NULL tokens; LF split lines; data in two `data:` lines
    s = Script(["Multi", "-line ", "data"], split=True, multiline=True)
    reply_case(t, fake, c, sid, db, "multi-line data, no usage", s)
    hist += [u("multi-line data, no usage", A), a(s.text)]

    # 4b. empty content pieces are skipped
    s = Script(["Empty ", "", "pieces", ""])
    reply_case(t, fake, c, sid, db, "empty pieces skipped", s, text="Empty pieces",
               chunks=["Empty ", "pieces"])
    hist += [u("empty pieces skipped", A), a(s.text)]

    # 5. Connection: close framing (no chunked encoding, no length)
    s = Script(["Close ", "framed ", "stream"], framing="close", usage=(1, 3))
    reply_case(t, fake, c, sid, db, "Connection: close framing", s, usage=(1, 3))
    hist += [u("Connection: close framing", A), a(s.text)]

    # 6. reasoning: delta.reasoning_content, delta.reasoning, <think> split across pieces
    s = Script(["The answer", " is 4."], reasoning=["Two plus ", "two is four."],
               usage=(8, 12))
    reply_case(t, fake, c, sid, db, "reasoning_content", s, usage=(8, 12),
               reasoning="Two plus two is four.", others=[d])
    s = Script(["Paris", "."], reasoning=["Capital ", "of France."],
               reasoning_field="reasoning")
    reply_case(t, fake, c, sid, db, "delta.reasoning", s, reasoning="Capital of France.")
    s = Script(["<thi", "nk>Let me", " think.</th", "ink>Hello", " world"])
    req, frames = reply_case(t, fake, c, sid, db, "think tags split across pieces", s,
                             text="Hello world", chunks="any", reasoning="Let me think.")
    bad = [x for x in chunk_texts(frames) if "think" in x or "<" in x or ">" in x]
    t.eq("think tags: no chunk carries the tags or the thinking", bad, [])

    # 7. the context of the next turn holds the visible replies only
    fake.play(Script(["ok"]))
    n = fake.count()
    chat_and_read(c, sid, "after reasoning")
    msgs = fake.requests[n].body.get("messages") if fake.count() > n else None
    t.eq("history sent after reasoning replies: visible text only, as stored", msgs,
         [SYS] + (hist + [
             u("reasoning_content", A), a("The answer is 4."), u("delta.reasoning", A),
             a("Paris."),
             u("think tags split across pieces", A), a("Hello world"),
             u("after reasoning", A)])[-20:])

    # 8. a session created with model_id asks for that model and stores it
    ev = c.request({"type": "create_session", "model_id": "other-model"}, type="session_created")
    sid2 = ev["session_id"]
    t.eq("create_session model_id: model", ev.get("model"), "other-model")
    s = Script(["Other ", "model"])
    req, _ = reply_case(t, fake, c, sid2, db, "session model_id", s, model="other-model")
    t.eq("session model_id: request asks for it", (req.body or {}).get("model"), "other-model")

    # 9. REST POST /sessions/{id}/messages reply:true: the assistant answers in the session
    fake.play(Script(["Via ", "REST"], usage=(3, 2)))
    n = fake.count()
    r = rest.post("/sessions/%s/messages" % sid2, {"content": "from rest", "reply": True})
    t.eq("REST message with reply: 201", r.status, 201)
    frames = c.read_reply(sid2)
    check_reply(t, "REST reply", frames, sid2, text="Via REST", chunks=["Via ", "REST"])
    req = fake.requests[n] if fake.count() > n else None
    t.eq("REST reply: request messages", req and req.body.get("messages"),
         [SYS, u("session model_id", A), a("Other model"),
          u("from rest")])

    # 10. three chats at once: each reply waits for the one before; each request ends with
    #     the user message it answers (a later queued chat is not in its context)
    fake.queue(Script(["one ", "two ", "three ", "four"], interval=0.1),
               Script(["second ", "reply"]), Script(["third"]))
    n = fake.count()
    c.chat("queued A")
    c.chat("queued B")
    c.chat("queued C")
    f1 = c.read_reply(sid2)
    f2 = c.read_reply(sid2)
    f3 = c.read_reply(sid2)
    t.eq("queued: the three replies in order",
         ["".join(chunk_texts(f)) for f in (f1, f2, f3)],
         ["one two three four", "second reply", "third"])
    if t.eq("queued: three requests", fake.count(), n + 3):
        r1, r2, r3 = fake.requests[n:n + 3]
        t.ok("queued: the second request starts after the first reply ended",
             r2.received_at >= r1.finished_at - 0.05,
             "second at %.3f, first finished %.3f" % (r2.received_at, r1.finished_at))
        for i, (r, q) in enumerate(((r1, "queued A"), (r2, "queued B"), (r3, "queued C"))):
            msgs = r.body.get("messages") or []
            t.eq("queued: request %d ends with the user message it answers" % (i + 1),
                 msgs[-1:], [u(q, A)])
        m2 = r2.body.get("messages") or []
        t.ok("queued: request 2 holds chat A and not the later chat C",
             u("queued A", A) in m2 and u("queued C", A) not in m2, repr(m2[-4:]))
        t.diag("queued: request 2 history tail %r" % (m2[-3:],))
        t.diag("queued: request 3 history tail %r" % ((r3.body.get("messages") or [])[-5:],))
    t.eq("B saw nothing of the other session", d.take_all(session_id=sid2), [])

    # 11. restart: the next request still carries the earlier turns
    c.close()
    d.close()
    b.stop()
    b2 = llm_broker(t, "openai", fake.url_openai, tmpdir=rest.tmpdir, port=rest.ws_port,
                    llm_model=MODEL, llm_api_key=KEY, system_prompt=PROMPT, name="broker-2")
    c = connect(b2, "A2")
    c.join(sid)
    fake.play(Script(["Still ", "here"]))
    n = fake.count()
    chat_and_read(c, sid, "after restart")
    stored = [m for m in rows(db, sid) if m["role"] in ("user", "assistant")]
    want = [u(m["content"], m["author_name"]) if m["role"] == "user" else a(m["content"])
            for m in stored[:-1]][-20:]
    req = fake.requests[n] if fake.count() > n else None
    t.eq("after restart: the request carries the stored history (last 20)",
         req and req.body.get("messages"), [SYS] + want)
    msgs = (req and req.body.get("messages")) or []
    t.ok("after restart: the turns from before the restart are in it",
         hist[2] in msgs and hist[3] in msgs and msgs[-1] == u("after restart", guest(c.id)),
         repr(msgs))
    c.close()
    b2.stop()
    rest.stop()


def test_nokey_context(t, fake):
    """No key, no system prompt (only the room sentence), --context-messages 2."""
    b = llm_broker(t, "openai", fake.url_openai, llm_model="small", context_messages="2")
    c = connect(b, "K")
    sid = c.create_session()
    K = guest(c.id)
    fake.play(Script(["r1"]))
    n = fake.count()
    chat_and_read(c, sid, "q1")
    req = fake.requests[n] if fake.count() > n else None
    if req is not None:
        check_request(t, "no key, no system prompt: the room sentence only", req, "small",
                      [{"role": "system", "content": ROOM}, u("q1", K)], key=None)
    fake.play(Script(["r2"]))
    chat_and_read(c, sid, "q2")
    fake.play(Script(["r3"]))
    n = fake.count()
    _, frames = chat_and_read(c, sid, "q3")
    t.eq("--context-messages 2: third reply streams", "".join(chunk_texts(frames)), "r3")
    req = fake.requests[n] if fake.count() > n else None
    t.eq("--context-messages 2: only the last 2 stored messages are sent",
         req and req.body.get("messages"),
         [{"role": "system", "content": ROOM}, a("r2"), u("q3", K)])
    c.close()
    b.stop()


def main(t):
    fake = FakeLLM()
    with t.section("openai main"):
        test_main(t, fake)
    with t.section("openai no key, context 2"):
        test_nokey_context(t, fake)
    fake.close()


if __name__ == "__main__":
    parley.run(main)
