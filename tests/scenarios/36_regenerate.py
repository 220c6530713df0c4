"""SPEC 9 regenerate: `{"type":"regenerate","session_id"?}` has the assistant answer the
session's last user message again. The earlier reply stays stored with status
`superseded`; members are told session_update message_superseded {message_id,
message_count}, then the new reply streams as every reply does. REST history, exports and
replays show only the newest reply unless ?all=true; superseded replies are not in the LLM
context and do not count in message_count (REST, the broker, /stats). Errors: nothing to
regenerate (not_found), a reply under way (unavailable), --llm none (bad_request),
not_in_session, session_not_found, invalid_field. A kill -9 after the regenerate was
acknowledged: the reply is produced after the restart, the old one stays superseded."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, check_reply, one_of  # noqa: E402
from llm_fake import FakeLLM, Script  # noqa: E402
from llm_support import (connect, guest, llm_broker, llm_name, rows,  # noqa: E402
                         system_text)

MODEL = "fake-model-7b"
PROMPT = "You are a terse assistant."


def u(text, who):
    """A user message of who (no name given: its guest name) as the LLM gets it (SPEC 9)."""
    name = guest(who.id)
    return {"role": "user", "name": llm_name(name), "content": name + ": " + text}


def a(text):
    return {"role": "assistant", "content": text}


def view(msgs):
    """(role, content, status) of REST or replay message objects."""
    return [(m.get("role"), m.get("content"), m.get("status")) for m in msgs]


def superseded_event(c, sid, timeout=10.0):
    return c.expect(timeout=timeout, type="session_update", update_type="message_superseded",
                    session_id=sid)


def expect_error(t, name, c, code, request_type="regenerate", timeout=10.0):
    ev = c.expect(timeout=timeout, type="error")
    t.eq("%s: error code %s" % (name, code), ev.get("code"), code)
    t.eq("%s: request_type" % name, ev.get("request_type"), request_type)
    t.ok("%s: a readable message" % name, isinstance(ev.get("message"), str) and
         len(ev.get("message")) > 10, repr(ev.get("message")))
    return ev


def regenerate(t, name, fake, c, others, sid, old_id, count, script):
    """Sends regenerate from c; checks message_superseded (old_id, count) then the new reply
    (script's text) at c and each of others. Returns (response_complete, LLM request)."""
    n = fake.count()
    fake.queue(script)
    c.send({"type": "regenerate"})
    for who in [c] + list(others):
        ev = superseded_event(who, sid)
        t.keys("%s: message_superseded fields (%s)" % (name, who.name), ev,
               {"type", "session_id", "update_type", "message_id", "message_count"})
        t.eq("%s: message_superseded.message_id (%s)" % (name, who.name),
             ev.get("message_id"), old_id)
        t.eq("%s: message_superseded.message_count (%s)" % (name, who.name),
             ev.get("message_count"), count)
    done = None
    for who in [c] + list(others):
        frames = who.read_reply(sid, timeout=30)
        done = check_reply(t, "%s: the new reply (%s)" % (name, who.name), frames, sid,
                           text=script.text, chunks=script.pieces)
    t.eq("%s: response_complete.message_count counts the new reply, not the old" % name,
         (done or {}).get("message_count"), count + 1)
    return done, fake.wait_request(n)


def test_openai(t, fake):
    rest = Rest(t)
    b = llm_broker(t, "openai", fake.url_openai, tmpdir=rest.tmpdir, port=rest.ws_port,
                   llm_model=MODEL, system_prompt=PROMPT)
    c = connect(b, "A")
    d = connect(b, "B")
    sid = c.create_session(title="regen")
    d.join(sid)

    # nothing to regenerate yet
    c.send({"type": "regenerate"})
    expect_error(t, "no user message", c, "not_found")

    first = Script(["First", " answer."])
    fake.queue(first)
    c.chat("What is up?")
    r1 = c.read_reply(sid, timeout=30)[-1]
    d.read_reply(sid, timeout=30)
    t.eq("first reply: message_count 2", r1.get("message_count"), 2)

    # regenerate twice: each supersedes the newest reply; the context never holds one
    done2, req2 = regenerate(t, "regenerate 1", fake, c, [d], sid, r1["message_id"], 1,
                             Script(["Second", " answer", "."]))
    t.eq("regenerate 1: the LLM is asked the same question again",
         req2.body.get("messages"),
         [{"role": "system", "content": system_text(PROMPT)}, u("What is up?", c)])
    done3, req3 = regenerate(t, "regenerate 2", fake, c, [d], sid, done2["message_id"], 1,
                             Script(["Third", " one."]))
    t.eq("regenerate 2: no superseded reply in the context", req3.body.get("messages"),
         [{"role": "system", "content": system_text(PROMPT)}, u("What is up?", c)])

    # a later turn: the context has the newest reply only
    fake.queue(Script(["Fourth."]))
    n = fake.count()
    c.chat("And then?")
    r4 = c.read_reply(sid, timeout=30)[-1]
    d.read_reply(sid, timeout=30)
    t.eq("later turn: the context skips the superseded replies",
         fake.wait_request(n).body.get("messages"),
         [{"role": "system", "content": system_text(PROMPT)}, u("What is up?", c),
          a("Third one."), u("And then?", c)])
    t.eq("later turn: message_count 4", r4.get("message_count"), 4)

    # the default answers keep their fields (no status); ?all=true adds each reply's status
    newest = [("user", "What is up?", None), ("assistant", "Third one.", None),
              ("user", "And then?", None), ("assistant", "Fourth.", None)]
    every = [("user", "What is up?", None), ("assistant", "First answer.", "superseded"),
             ("assistant", "Second answer.", "superseded"),
             ("assistant", "Third one.", "complete"), ("user", "And then?", None),
             ("assistant", "Fourth.", "complete")]
    st, _, body = rest.get("/sessions/%s" % sid)
    t.eq("REST history: 200", st, 200)
    t.eq("REST history: only the newest reply by default", view(body.get("messages", [])),
         newest)
    t.eq("REST history: message_count leaves superseded replies out",
         body.get("message_count"), 4)
    st, _, body = rest.get("/sessions/%s?all=true" % sid)
    t.eq("REST history ?all=true: every reply, with status", view(body.get("messages", [])),
         every)
    t.eq("REST history ?all=true: message_count the same", body.get("message_count"), 4)
    st, _, body = rest.get("/sessions/%s?all=maybe" % sid)
    t.eq("REST history ?all=maybe: 400", st, 400)
    t.eq("REST history ?all=maybe: invalid_field", (body.get("error") or {}).get("code"),
         "invalid_field")
    st, _, body = rest.get("/sessions/%s?limit=2" % sid)
    t.eq("REST history limit=2: the two newest shown", view(body.get("messages", [])),
         newest[2:])
    st, _, body = rest.get("/sessions/%s/messages" % sid)
    t.eq("REST messages page: default", view(body.get("messages", [])), newest)
    st, _, body = rest.get("/sessions/%s/messages?all=true" % sid)
    t.eq("REST messages page: ?all=true", view(body.get("messages", [])), every)
    st, _, body = rest.get("/sessions/%s/export?format=json" % sid)
    t.eq("REST export: default", view(body.get("messages", [])), newest)
    st, _, body = rest.get("/sessions/%s/export?format=json&all=true" % sid)
    t.eq("REST export: ?all=true", view(body.get("messages", [])), every)
    st, _, body = rest.get("/sessions")
    t.eq("REST session list: message_count 4",
         [s.get("message_count") for s in body.get("sessions", []) if s.get("session_id") == sid],
         [4])
    st, _, body = rest.get("/stats")
    t.eq("REST /stats: messages_total leaves superseded replies out",
         body.get("messages_total"), 4)

    # the database holds them all
    stored = [(r["role"], r["content"], r["status"]) for r in rows(b.db, sid)]
    t.eq("database: every reply stays stored, superseded marked", stored, every)

    # a replay (join with since) matches REST's default
    e = connect(b, "E")
    ev = e.join(sid, since=0)
    t.eq("replay: only the newest reply", view(ev.get("messages", [])), newest)
    t.eq("replay: message_count 4", ev.get("message_count"), 4)

    # a reply under way: regenerate is refused, the reply goes on
    fake.queue(Script(["slow "] * 8, interval=0.25))
    c.chat("Take your time")
    c.expect(timeout=20, type="response_start", session_id=sid)
    c.send({"type": "regenerate"})
    expect_error(t, "while a reply streams", c, "unavailable")
    done = c.read_reply(sid, timeout=30)[-1]
    t.eq("while a reply streams: the reply completes", done.get("stopped"), False)

    # not a member, unknown session, wrong field
    f = connect(b, "F")
    f.send({"type": "regenerate"})
    expect_error(t, "not in a session", f, "not_in_session")
    f.send({"type": "regenerate", "session_id": sid})
    expect_error(t, "a session not joined", f, "not_in_session")
    f.send({"type": "regenerate", "session_id": "00000000000000ff"})
    expect_error(t, "an unknown session", f, "session_not_found")
    f.send({"type": "regenerate", "session_id": 5})
    ev = expect_error(t, "session_id a number", f, "invalid_field")
    t.ok("session_id a number: names the field", "session_id" in ev.get("message", ""),
         repr(ev.get("message")))
    b.stop()
    rest.stop()


def test_restart(t, fake):
    """kill -9 after regenerate was acknowledged (message_superseded), before the new reply
    completed: the reply is produced after the restart, the old one stays superseded."""
    b = llm_broker(t, "openai", fake.url_openai, llm_model=MODEL, name="broker-regen-kill9")
    c = connect(b, "A")
    sid = c.create_session()
    fake.queue(Script(["Before", " the", " kill."]))
    c.chat("Tell me")
    r1 = c.read_reply(sid, timeout=30)[-1]
    fake.queue(Script(["slow "] * 40, interval=0.25))
    c.send({"type": "regenerate"})
    ev = superseded_event(c, sid)
    t.eq("kill -9: the old reply was superseded", ev.get("message_id"), r1["message_id"])
    c.expect(timeout=20, type="chunk", session_id=sid)  # the new reply is streaming
    b.kill9()
    fake.play(Script(["After", " restart."]))
    b.start()

    def produced():
        return [r for r in rows(b.db, sid) if r["role"] == "assistant" and
                r["content"] == "After restart." and r["status"] == "complete"]
    deadline = time.monotonic() + 30
    while not produced() and time.monotonic() < deadline:
        time.sleep(0.3)
    t.eq("kill -9: the reply is produced after the restart", len(produced()), 1)
    stored = rows(b.db, sid)
    t.eq("kill -9: the old reply stays superseded",
         [r["status"] for r in stored if r["id"] == r1["message_id"]], ["superseded"])
    t.eq("kill -9: the user message once, the newest reply last",
         [(r["role"], r["content"]) for r in stored if r["role"] == "user"] +
         [(stored[-1]["role"], stored[-1]["content"])],
         [("user", "Tell me"), ("assistant", "After restart.")])
    # what the killed broker had streamed may be kept as an incomplete reply (SPEC 8)
    t.ok("kill -9: no other reply",
         all(r["status"] in ("superseded", "incomplete") for r in stored[1:-1]),
         repr([(r["content"][:20], r["status"]) for r in stored]))
    b.stop()


def test_echo_and_none(t):
    b = Broker(t, name="broker-regen-echo")
    c = connect(b, "A")
    d = connect(b, "B")
    sid = c.create_session()
    d.join(sid)
    c.chat("echo me please")
    r1 = c.read_reply(sid)[-1]
    d.read_reply(sid)
    d.send({"type": "regenerate", "session_id": sid})  # any member may ask
    for who in (c, d):
        ev = superseded_event(who, sid)
        t.eq("echo: message_superseded at %s" % who.name,
             (ev.get("message_id"), ev.get("message_count")), (r1["message_id"], 1))
        frames = who.read_reply(sid)
        done = check_reply(t, "echo: the reply again at %s" % who.name, frames, sid,
                           text="echo me please")
        t.eq("echo: message_count 2 at %s" % who.name, (done or {}).get("message_count"), 2)
    t.eq("echo: stored replies",
         [(r["role"], r["content"], r["status"]) for r in rows(b.db, sid)],
         [("user", "echo me please", None), ("assistant", "echo me please", "superseded"),
          ("assistant", "echo me please", "complete")])
    b.stop()

    n = Broker(t, llm="none", name="broker-regen-none")
    c = connect(n, "A")
    sid = c.create_session()
    c.chat("no assistant here")
    c.send({"type": "regenerate"})
    ev = expect_error(t, "--llm none", c, "bad_request")
    t.ok("--llm none: the message says there is no assistant",
         "no assistant" in ev.get("message", ""), repr(ev.get("message")))
    t.eq("--llm none: nothing else happens", c.quiet(0.5, type=one_of("status", "error")), [])
    n.stop()


def main(t):
    fake = FakeLLM()
    with t.section("regenerate with the openai provider"):
        test_openai(t, fake)
    with t.section("regenerate, kill -9, restart"):
        test_restart(t, fake)
    with t.section("regenerate with echo and none"):
        test_echo_and_none(t)
    fake.close()


if __name__ == "__main__":
    parley.run(main)
