"""SPEC 9 "The assistant sees who said what", against the fake OpenAI-compatible and Gemini
servers (tests/lib/llm_fake.py): three named people chat in one room, then the exact request
bodies are asserted. OpenAI-compatible: each user message with an author has `name`
(common/names.c name_llm: `Zoë Ann` -> `Zo__Ann`) and a `Name: ` prefix in its content; a
message without an author (REST without a name) has neither; a content that already begins
with its author's `Name: ` is not prefixed twice; the system prompt (configured, or a
template) gains the room sentence, only when the context has an author; the stored messages
keep their own text; status.context_messages counts the messages sent. Gemini: the prefix
only, the room sentence in systemInstruction."""

import os
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, WsClient  # noqa: E402
from llm_fake import FakeLLM, Script  # noqa: E402
from llm_support import ROOM, chunk_texts, llm_broker, rows  # noqa: E402

MODEL = "fake-room-model"
PROMPT = "You are the assistant of a team chat."
TEMPLATE = "Answer in one word."  # tdir/brief.txt, no newline
ANA = "Ana"
ZOE = "Zoë Ann"  # non-ASCII letter and a space
WEI = "李 Wei-2"  # CJK, a space, a hyphen and a digit; given as ?name=
# what name_llm makes of them (one '_' per character outside [a-zA-Z0-9_-])
ANA_LLM = "Ana"
ZOE_LLM = "Zo__Ann"
WEI_LLM = "__Wei-2"
BOT = "Rest Bot"  # the name of a REST POST
BOT_LLM = "Rest_Bot"
EVE = "Eve"
SYS = {"role": "system", "content": PROMPT + "\n\n" + ROOM}


def u(content, name=None):
    """A user message as the OpenAI request holds it (content already prefixed)."""
    m = {"role": "user", "content": content}
    if name is not None:
        m["name"] = name
    return m


def a(text):
    return {"role": "assistant", "content": text}


def connect(b, label, name=None):
    url = b.url + ("?name=" + urllib.parse.quote(name, safe="") if name else "")
    c = WsClient(url, name=label)
    c.id = c.expect(type="connected")["connection_id"]
    return c


def turn(t, fake, sender, sid, text, reply, members):
    """sender chats text; the fake answers reply. Returns (request body, reply frames)."""
    for m in members:
        m.clear()
    words = reply.split(" ")
    fake.play(Script([w + " " for w in words[:-1]] + words[-1:]))
    n = fake.count()
    sender.chat(text)
    frames = sender.read_reply(sid, timeout=30)
    t.eq("%r: the reply streams" % text, "".join(chunk_texts(frames)), reply)
    for m in members:  # every member has all of it before the next turn clears them
        if m is not sender:
            m.read_reply(sid, timeout=30)
    req = fake.wait_request(n, timeout=10)
    return req.body or {}, frames


def rest_turn(t, fake, rest, reader, sid, body, reply, others=()):
    """A REST POST with reply:true; reader (a member) reads the reply, and others too."""
    for m in (reader,) + tuple(others):
        m.clear()
    fake.play(Script([reply]))
    n = fake.count()
    r = rest.post("/sessions/%s/messages" % sid, dict(body, reply=True))
    t.eq("REST %r: 201" % body.get("content"), r.status, 201)
    frames = reader.read_reply(sid, timeout=30)
    t.eq("REST %r: the reply streams" % body.get("content"), "".join(chunk_texts(frames)),
         reply)
    for m in others:
        m.read_reply(sid, timeout=30)
    return fake.wait_request(n, timeout=10).body or {}, frames


def context_count(t, name, frames, sent):
    st = [f for f in frames if f.get("type") == "status"]
    t.eq("%s: status.context_messages = the messages sent (system prompt apart)" % name,
         st[0].get("context_messages") if st else None,
         len([m for m in sent if m.get("role") != "system"]))


def test_openai(t, fake):
    rest = Rest(t)
    tdir = os.path.join(rest.tmpdir, "templates")
    os.makedirs(tdir)
    with open(os.path.join(tdir, "brief.txt"), "w", encoding="utf-8") as f:
        f.write(TEMPLATE)
    b = llm_broker(t, "openai", fake.url_openai, tmpdir=rest.tmpdir, port=rest.ws_port,
                   llm_model=MODEL, system_prompt=PROMPT, templates_dir=tdir)
    ana = connect(b, "ana")
    sid = ana.create_session(title="room", name=ANA)
    zoe = connect(b, "zoe")
    zoe.join(sid, name=ZOE)
    wei = connect(b, "wei", name=WEI)
    wei.join(sid)
    people = [ana, zoe, wei]
    hist = []

    body, frames = turn(t, fake, ana, sid, "what time is it?", "It is noon.", people)
    want = [SYS, u("Ana: what time is it?", ANA_LLM)]
    t.eq("first turn: system prompt + room sentence, Ana's message named and prefixed",
         body.get("messages"), want)
    context_count(t, "first turn", frames, want)
    hist += want[1:] + [a("It is noon.")]

    body, frames = turn(t, fake, zoe, sid, "Hi all, Zoë here", "Hello Zoë.", people)
    want = [SYS] + hist + [u("Zoë Ann: Hi all, Zoë here", ZOE_LLM)]
    t.eq("Zoë Ann: name %r, the display name in the prefix" % ZOE_LLM, body.get("messages"),
         want)
    hist = want[1:] + [a("Hello Zoë.")]

    body, frames = turn(t, fake, wei, sid, "Ana: was it noon?", "Yes.", people)
    want = [SYS] + hist + [u("李 Wei-2: Ana: was it noon?", WEI_LLM)]
    t.eq("李 Wei-2 (?name=) quoting Ana: prefixed with its own author", body.get("messages"),
         want)
    hist = want[1:] + [a("Yes.")]

    body, frames = turn(t, fake, ana, sid, "Ana: I sign my messages", "Noted.", people)
    want = [SYS] + hist + [u("Ana: I sign my messages", ANA_LLM)]
    t.eq("Ana's content already begins with 'Ana: ': not prefixed twice", body.get("messages"),
         want)
    hist = want[1:] + [a("Noted.")]

    body, frames = rest_turn(t, fake, rest, ana, sid, {"content": "posted without a name"},
                             "Seen.", others=[zoe, wei])
    want = [SYS] + hist + [u("posted without a name")]
    t.eq("REST without a name: no name, no prefix", body.get("messages"), want)
    hist = want[1:] + [a("Seen.")]

    body, frames = rest_turn(t, fake, rest, ana, sid,
                             {"content": "posted with a name", "name": BOT}, "Seen too.",
                             others=[zoe, wei])
    want = [SYS] + hist + [u("Rest Bot: posted with a name", BOT_LLM)]
    t.eq("REST with a name: named and prefixed", body.get("messages"), want)
    hist = want[1:] + [a("Seen too.")]

    body, frames = turn(t, fake, zoe, sid, "what did Ana ask?", "The time.", people)
    want = [SYS,
            u("Ana: what time is it?", ANA_LLM), a("It is noon."),
            u("Zoë Ann: Hi all, Zoë here", ZOE_LLM), a("Hello Zoë."),
            u("李 Wei-2: Ana: was it noon?", WEI_LLM), a("Yes."),
            u("Ana: I sign my messages", ANA_LLM), a("Noted."),
            u("posted without a name"), a("Seen."),
            u("Rest Bot: posted with a name", BOT_LLM), a("Seen too."),
            u("Zoë Ann: what did Ana ask?", ZOE_LLM)]
    t.eq("what did Ana ask?: the whole room, who said what, in order", body.get("messages"),
         want)
    context_count(t, "what did Ana ask?", frames, want)
    t.keys("what did Ana ask?: a named user message has exactly role, name, content",
           body["messages"][-1] if body.get("messages") else {}, {"role", "name", "content"})
    t.keys("what did Ana ask?: an assistant message has exactly role, content",
           body["messages"][2] if len(body.get("messages") or []) > 2 else {},
           {"role", "content"})

    stored = [(r["role"], r["content"], r["author_name"]) for r in rows(b.db, sid)
              if r["role"] == "user"]
    t.eq("stored user messages keep their own text and author", stored, [
        ("user", "what time is it?", ANA), ("user", "Hi all, Zoë here", ZOE),
        ("user", "Ana: was it noon?", WEI), ("user", "Ana: I sign my messages", ANA),
        ("user", "posted without a name", None), ("user", "posted with a name", BOT),
        ("user", "what did Ana ask?", ZOE)])

    # a room where nobody has a name: the system prompt as configured, nothing added
    r = rest.post("/sessions/new", {"title": "anonymous"})
    sid2 = r.body.get("session_id") if r.status == 201 else None
    ana.join(sid2)
    body, _ = rest_turn(t, fake, rest, ana, sid2, {"content": "nobody signs"}, "Fine.")
    t.eq("no author in the context: the configured prompt only, no name, no prefix",
         body.get("messages"), [{"role": "system", "content": PROMPT}, u("nobody signs")])
    body, _ = rest_turn(t, fake, rest, ana, sid2, {"content": "still nobody"}, "Fine again.")
    t.eq("no author, second turn: unchanged", body.get("messages"),
         [{"role": "system", "content": PROMPT}, u("nobody signs"), a("Fine."),
          u("still nobody")])

    # envelope llm_request with a template: the template, then the room sentence
    eve = connect(b, "eve", name=EVE)
    eve.send({"type": "auth", "data": {}})
    eve.expect(type="auth_success")
    eve.send({"type": "subscribe", "channel": None, "data": {"channel": "tmpl-room"}})
    eve.expect(type="subscription_success")
    fake.play(Script(["Short."]))
    n = fake.count()
    eve.send({"type": "llm_request", "channel": "tmpl-room",
              "data": {"content": "keep it short", "template": "brief"}})
    eve.expect(timeout=30, type="response_complete")
    req = fake.wait_request(n, timeout=10)
    t.eq("envelope llm_request with a template: template + room sentence, Eve named",
         (req.body or {}).get("messages"),
         [{"role": "system", "content": TEMPLATE + "\n\n" + ROOM},
          u("Eve: keep it short", "Eve")])

    for c in people + [eve]:
        c.close()
    b.stop()
    rest.stop()


def g_user(text):
    return {"role": "user", "parts": [{"text": text}]}


def g_model(text):
    return {"role": "model", "parts": [{"text": text}]}


def test_gemini(t, fake):
    rest = Rest(t)
    b = llm_broker(t, "gemini", fake.url_gemini, tmpdir=rest.tmpdir, port=rest.ws_port,
                   llm_model="gemini-room", system_prompt=PROMPT)
    ana = connect(b, "ana")
    sid = ana.create_session(name=ANA)
    zoe = connect(b, "zoe")
    zoe.join(sid, name=ZOE)
    people = [ana, zoe]
    turn(t, fake, ana, sid, "what time is it?", "Noon.", people)
    rest_turn(t, fake, rest, ana, sid, {"content": "no name here"}, "Ok.", others=[zoe])
    turn(t, fake, ana, sid, "Ana: signed", "Fine.", people)
    body, _ = turn(t, fake, zoe, sid, "what did Ana ask?", "The time.", people)
    t.keys("gemini: body keys contents, systemInstruction", body,
           {"contents", "systemInstruction"})
    t.eq("gemini: the prefix only (no name field), none without an author, not twice",
         body.get("contents"), [
             g_user("Ana: what time is it?"), g_model("Noon."),
             g_user("no name here"), g_model("Ok."),
             g_user("Ana: signed"), g_model("Fine."),
             g_user("Zoë Ann: what did Ana ask?")])
    t.eq("gemini: systemInstruction = the prompt, then the room sentence",
         body.get("systemInstruction"), {"parts": [{"text": PROMPT + "\n\n" + ROOM}]})

    # no author: the configured prompt only
    r = rest.post("/sessions/new", {})
    sid2 = r.body.get("session_id") if r.status == 201 else None
    ana.join(sid2)
    body, _ = rest_turn(t, fake, rest, ana, sid2, {"content": "anonymous"}, "Sure.")
    t.eq("gemini, no author: contents", body.get("contents"), [g_user("anonymous")])
    t.eq("gemini, no author: systemInstruction is the prompt alone",
         body.get("systemInstruction"), {"parts": [{"text": PROMPT}]})
    for c in people:
        c.close()
    b.stop()
    rest.stop()


def main(t):
    fake = FakeLLM()
    with t.section("openai: names and prefixes"):
        test_openai(t, fake)
    with t.section("gemini: prefixes"):
        test_gemini(t, fake)
    fake.close()


if __name__ == "__main__":
    parley.run(main)
