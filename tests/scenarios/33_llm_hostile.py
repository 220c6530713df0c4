"""An LLM server is hostile too (issue 12, SPEC 6): its error pages in Latin-1 and its
mid-stream errors cut inside a character still reach the session as valid UTF-8, a
"\\u0000" in delta.content is text, the model the server names is stored when none is
configured, --llm-max-concurrent queues replies first come first served, and a model name
cannot reach outside its path segment of the Gemini URL."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from llm_fake import FakeLLM, Script  # noqa: E402
from llm_support import (chat_and_read, chunk_texts, connect, failure_case, llm_broker,  # noqa: E402
                         rows)

EMOJI = "\U0001f600"


def test_openai(t):
    fake = FakeLLM()
    b = llm_broker(t, "openai", fake.url_openai)  # no --llm-model
    c = connect(b, "A")
    sid = c.create_session()

    fake.play(Script(["Hel", "lo"], server_model="qwen2.5-7b-instruct"))
    _, frames = chat_and_read(c, sid, "which model?")
    last = rows(b.db, sid, "assistant")[-1]
    t.eq("no --llm-model: the model the server names is stored",
         (last.get("model"), last.get("content")), ("qwen2.5-7b-instruct", "Hello"))

    for i in range(5):
        fake.play(Script(["a\u0000b", "c\u0000", "\u0000d"]))
        _, frames = chat_and_read(c, sid, "nul %d" % i)
        t.eq("a \\u0000 in delta.content (%d): the reply completes, NUL dropped" % i,
             "".join(chunk_texts(frames)), "abcd")
        t.eq("a \\u0000 in delta.content (%d): stored complete" % i,
             [(r["content"], r["status"]) for r in rows(b.db, sid, "assistant")][-1],
             ("abcd", "complete"))

    failure_case(t, fake, c, sid, b.db, "mid-stream error quoting the reply",
                 Script([EMOJI * 50], after="error", error_message=EMOJI * 300),
                 "reported an error: " + EMOJI * 50, partial=EMOJI * 50, contains=True)
    err_row = rows(b.db, sid, "assistant")[-2]
    t.ok("mid-stream error: the stored error is valid UTF-8 (read back as text)",
         isinstance(err_row.get("error"), str) and EMOJI in err_row["error"] and
         "\ufffd" not in err_row["error"][:-4], repr(err_row.get("error"))[-80:])

    failure_case(t, fake, c, sid, b.db, "an error page in Latin-1",
                 Script(status=500, error_body=b"<html>Le mod\xe8le est surcharg\xe9</html>"),
                 "Le mod\ufffdle est surcharg\ufffd", contains=True)
    failure_case(t, fake, c, sid, b.db, "an error page of invalid UTF-8 cut anywhere",
                 Script(status=503, error_body=b"\xff\xfe" + ("\u00e9" * 300).encode()[1:]),
                 "answered HTTP 503", contains=True)
    # a reply may hold 1 MiB: a server that sends more is cut there, the rest not kept
    failure_case(t, fake, c, sid, b.db, "a reply over 1 MiB",
                 Script(["%02d" % i + "x" * (64 * 1024 - 2) for i in range(20)], interval=0.1),
                 "passed 1 MiB", partial=True, contains=True, closed=True)
    row = rows(b.db, sid, "assistant")[-2]
    t.eq("a reply over 1 MiB: exactly 1 MiB stored, incomplete",
         (len(row["content"].encode()), row["status"]), (1024 * 1024, "incomplete"))
    t.ok("the connection survived every one of them", c.ping_ok(), "no pong")
    c.close()
    b.stop()
    fake.close()


def test_concurrency(t):
    fake = FakeLLM(Script(["slow ", "reply"], interval=0.4))
    b = llm_broker(t, "openai", fake.url_openai, llm_model="m", llm_max_concurrent="1",
                   name="broker-llm-one-at-a-time")
    clients = [connect(b, "C%d" % i) for i in range(3)]
    sids = [c.create_session() for c in clients]
    for c in clients:
        c.chat("go")
    for c, sid in zip(clients, sids):
        c.read_reply(sid, timeout=30)
    reqs = list(fake.requests)
    t.eq("--llm-max-concurrent 1: three replies, three requests", len(reqs), 3)
    overlap = [(a.raw_path, b2.raw_path) for a, b2 in zip(reqs, reqs[1:])
               if b2.received_at < (a.finished_at or a.received_at) - 0.05]
    t.eq("--llm-max-concurrent 1: each request starts after the one before ended", overlap, [])
    for c in clients:
        c.close()
    b.stop()
    fake.close()


def test_gemini_model_path(t):
    fake = FakeLLM(Script(["ok"]))
    odd = "a/../b?c=d#e f"
    b = llm_broker(t, "gemini", fake.url_gemini, llm_model="gemini-x", llm_models=odd,
                   name="broker-gemini-odd-model")
    c = connect(b, "G")
    sid = c.create_session(model_id=odd)
    chat_and_read(c, sid, "hello")
    req = fake.requests[-1]
    t.eq("a model name is one escaped path segment of the Gemini URL", req.raw_path,
         "/v1beta/models/a%2F..%2Fb%3Fc%3Dd%23e%20f:streamGenerateContent?alt=sse")
    c.close()
    b.stop()
    fake.close()


def main(t):
    with t.section("openai"):
        test_openai(t)
    with t.section("concurrency"):
        test_concurrency(t)
    with t.section("gemini model path"):
        test_gemini_model_path(t)


if __name__ == "__main__":
    parley.run(main)
