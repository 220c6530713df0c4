"""Broker with the echo assistant: the reply streamed to every member in order (chunks
concatenate exactly to the message, 1..n, final empty chunk, response_complete fields),
multi-turn context, stop mid-reply (partial reply stored), queueing of a second chat,
join while a reply streams, `since` replay after a reconnect, client_msg_id resend, and
the `none` assistant."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import TS_RE, Broker, check_reply, echo_chunks, one_of, sql, strict_equal  # noqa: E402

REPLY_TYPES = one_of("status", "response_start", "chunk", "response_complete")


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def words(n, prefix="w"):
    return " ".join("%s%d" % (prefix, i) for i in range(1, n + 1))


def db_message(db, mid):
    code, lines = sql(db, "select role, content, coalesce(status, '-') from messages "
                      "where id = %d;" % mid)
    return lines


def test_stream(t, b):
    a = connect(b, "A")
    c = connect(b, "B")
    t.eq("connected: server_info.model is echo", a.received[0].get("server_info", {}).get("model"),
         "echo")
    sid = a.create_session()
    c.join(sid)
    a.expect(type="session_update", update_type="user_joined")

    text = "  Leading and   multiple  spaces\there ✓ "
    ack = a.chat(text)
    uid = ack["message"]["id"]
    t.eq("echo: message_added count 1", ack.get("message_count"), 1)
    fa = a.read_reply(sid)
    fb = c.read_reply(sid)
    done = check_reply(t, "echo reply (sender)", fa, sid, text)
    check_reply(t, "echo reply (other member)", fb, sid, text)
    t.ok("echo: every member gets the very same stream", strict_equal(fa, fb),
         "A %r\nB %r" % (fa, fb))
    t.eq("echo: first turn uses 1 context message", fa[0].get("context_messages"), 1)
    ib = [i for i, f in enumerate(c.received) if isinstance(f, dict) and
          f.get("update_type") == "message_added"]
    ist = [i for i, f in enumerate(c.received) if isinstance(f, dict) and
           f.get("type") == "status"]
    t.ok("echo: message_added arrives before the reply's status",
         ib and ist and ib[0] < ist[0], "message_added at %r, status at %r" % (ib, ist))
    if done:
        t.eq("response_complete: message_count 2", done.get("message_count"), 2)
        t.ok("response_complete: message_id after the user message",
             done.get("message_id", 0) > uid, repr(done))
        t.eq("database: response_complete.message_id is the stored assistant reply",
             db_message(b.db, done["message_id"]), ["assistant|%s|complete" % text]
             if "\n" not in text else None)
    t.eq("echo: nothing more after response_complete",
         a.quiet(0.3, type=REPLY_TYPES) + c.take_all(type=REPLY_TYPES), [])

    # second turn: the context is the stored history (2 before + the new one)
    ack = c.chat("second turn")
    a.expect(type="session_update", update_type="message_added")
    fa = a.read_reply(sid)
    fb = c.read_reply(sid)
    done = check_reply(t, "second turn", fb, sid, "second turn")
    t.ok("second turn: same stream to both", strict_equal(fa, fb), "differs")
    t.eq("second turn: 3 context messages", fb[0].get("context_messages"), 3)
    if done:
        t.eq("second turn: message_count 4", done.get("message_count"), 4)

    # a single word, and a long message
    for name, msg in (("single word", "word"), ("200 words", words(200))):
        a.chat(msg)
        c.expect(type="session_update", update_type="message_added")
        fa = a.read_reply(sid, timeout=30)
        check_reply(t, "echo %s" % name, fa, sid, msg)
        t.ok("echo %s: same stream to both" % name, strict_equal(fa, c.read_reply(sid, 30)),
             "differs")
    a.close()
    c.close()


def test_stop(t, b):
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    a.expect(type="session_update", update_type="user_joined")
    # stop with nothing streaming does nothing
    a.send({"type": "stop"})
    t.eq("stop with nothing streaming: no answer", a.quiet(0.5), [])
    t.ok("stop with nothing streaming: connection fine", a.ping_ok(), "no pong")

    text = words(300)
    a.chat(text)
    c.expect(type="session_update", update_type="message_added")
    c.expect(timeout=10, type="chunk", chunk_number=5)
    a.send({"type": "stop"})
    fa = a.read_reply(sid, timeout=20)
    fb = c.read_reply(sid, timeout=20)
    done = check_reply(t, "stopped reply", fa, sid, text, stopped=True)
    t.ok("stop: B sees what A sees (but chunk 5, taken above)",
         strict_equal(fb, [f for f in fa if not (f.get("type") == "chunk" and
                                                 f.get("chunk_number") == 5)]),
         "A %d frames, B %d" % (len(fa), len(fb)))
    got = "".join(f.get("text", "") for f in fa if f.get("type") == "chunk")
    t.eq("stop: no chunk after the final one",
         a.quiet(0.5, type=one_of("chunk", "response_complete")), [])
    if done:
        t.eq("stop: response_complete.stopped true", done.get("stopped"), True)
        row = db_message(b.db, done.get("message_id", 0))
        stored = row[0].split("|", 2)[1] if row else None
        t.ok("stop: the stored partial reply is a strict prefix of the message",
             isinstance(stored, str) and text.startswith(stored) and len(stored) < len(text),
             "stored %r" % (stored[-40:] if stored else stored,))
        t.eq("stop: the stored partial reply is what was streamed", stored, got)
        t.eq("stop: stored with status stopped", row[0].split("|")[-1] if row else None,
             "stopped")
    # the session goes on normally
    a.chat("after stop")
    check_reply(t, "reply after a stop", a.read_reply(sid), sid, "after stop")
    c.read_reply(sid)
    a.close()
    c.close()


def test_stop_edges(t, b):
    """stop from another member; a stop leaves the queued reply alone; leaving or closing
    during a reply."""
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    long_text, short = words(200), "queued behind it"
    a.send({"type": "chat", "message": long_text})
    a.send({"type": "chat", "message": short})
    c.expect(timeout=10, type="chunk", chunk_number=3)
    c.send({"type": "stop"})  # B stops the reply to A's message
    f1 = a.read_reply(sid, timeout=20)
    check_reply(t, "stop by another member", f1, sid, long_text, stopped=True)
    f2 = a.read_reply(sid, timeout=20)
    check_reply(t, "stop: the queued reply still comes, complete", f2, sid, short)
    c.read_reply(sid)
    c.read_reply(sid)

    # leaving during a reply: no more frames of it; the others get all of it
    text = words(100)
    a.chat(text)
    c.expect(timeout=10, type="chunk", chunk_number=2)
    c.request({"type": "leave_session"}, type="session_left")
    c.clear()
    check_reply(t, "reply while a member leaves", a.read_reply(sid, timeout=20), sid, text)
    t.eq("the member that left mid-reply gets no more of it",
         c.quiet(0.3, type=REPLY_TYPES), [])
    # the sender closes during its reply: the others still get it and it is stored
    c.join(sid)
    a.expect(type="session_update", update_type="user_joined")
    c.chat("B goes first")
    a.read_reply(sid)
    c.read_reply(sid)
    text = words(60, "x")
    a.chat(text)
    c.expect(timeout=10, type="chunk", chunk_number=2)
    a.close()
    rest = c.read_reply(sid, timeout=20)
    t.eq("sender closed mid-reply: the others get the rest, complete",
         (rest[-1].get("type"), rest[-1].get("stopped")), ("response_complete", False))
    t.eq("sender closed mid-reply: the reply is stored in full",
         db_message(b.db, rest[-1].get("message_id", 0)), ["assistant|%s|complete" % text])
    c.close()


def test_queue(t, b):
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    first, second = words(40, "first"), "second one now"
    a.send({"type": "chat", "message": first})
    a.send({"type": "chat", "message": second})
    acks = [c.expect(type="session_update", update_type="message_added") for _ in range(2)]
    t.eq("queue: both chats acknowledged in order",
         [x["message"]["content"] for x in acks], [first, second])
    f1 = c.read_reply(sid, timeout=20)
    f2 = c.read_reply(sid, timeout=20)
    d1 = check_reply(t, "queue: first reply", f1, sid, first)
    d2 = check_reply(t, "queue: second reply", f2, sid, second)
    t.ok("queue: two distinct replies", f1[1].get("response_id") != f2[1].get("response_id"),
         "same response_id")
    seq = [f for f in c.received if isinstance(f, dict)]
    i_ack2 = next((i for i, f in enumerate(seq) if f.get("update_type") == "message_added" and
                   f["message"]["content"] == second), None)
    i_done1 = next((i for i, f in enumerate(seq) if f.get("type") == "response_complete"), None)
    t.ok("queue: the second chat is broadcast at once, before the first reply completes",
         i_ack2 is not None and i_done1 is not None and i_ack2 < i_done1,
         "ack at %r, first response_complete at %r" % (i_ack2, i_done1))
    if d1 and d2:
        t.eq("queue: message counts 3 then 4",
             (d1.get("message_count"), d2.get("message_count")), (3, 4))
    code, lines = sql(b.db, "select role, substr(content, 1, 12) from messages where "
                      "session_id = '%s' order by id;" % sid)
    t.eq("queue: stored as user, user, assistant, assistant", lines,
         ["user|" + first[:12], "user|" + second[:12], "assistant|" + first[:12],
          "assistant|" + second[:12]])
    a.read_reply(sid)
    a.read_reply(sid)
    a.close()
    c.close()


def test_join_streaming(t, b):
    a = connect(b, "A")
    sid = a.create_session()
    text = words(150)
    a.chat(text)
    start = a.expect(type="response_start")
    a.expect(timeout=10, type="chunk", chunk_number=4)
    c = connect(b, "C")
    j = c.join(sid)
    st = j.get("streaming")
    t.keys("join while streaming: session_joined carries streaming", j,
           {"type", "session_id", "message_count", "clients", "members", "reply_mode",
            "streaming"})
    t.keys("join while streaming: streaming is {response_id, text}", st,
           {"response_id", "text"})
    if not isinstance(st, dict):
        return
    t.eq("join while streaming: response_id of the reply in progress",
         st.get("response_id"), start.get("response_id"))
    sofar = st.get("text")
    pieces = echo_chunks(text)
    k = next((i for i in range(len(pieces) + 1) if "".join(pieces[:i]) == sofar), None)
    t.ok("join while streaming: text is a whole-chunk prefix of the reply (>= 4 chunks)",
         isinstance(sofar, str) and k is not None and 4 <= k < len(pieces),
         "text %r" % (sofar[-40:] if isinstance(sofar, str) else sofar,))
    rest = []
    while True:
        f = c.expect(timeout=20, type=REPLY_TYPES, session_id=sid)
        rest.append(f)
        if f.get("type") == "response_complete":
            break
    chunks = [f for f in rest if f.get("type") == "chunk"]
    t.eq("join while streaming: the joiner gets the live tail as chunks only",
         [f.get("type") for f in rest], ["chunk"] * len(chunks) + ["response_complete"])
    t.eq("join while streaming: text + the remaining chunks == the whole reply",
         (sofar or "") + "".join(f.get("text", "") for f in chunks), text)
    if k is not None and chunks:
        t.eq("join while streaming: the first live chunk continues the numbering",
             chunks[0].get("chunk_number"), k + 1)
    t.eq("join while streaming: the joiner's response_complete is the sender's",
         rest[-1], a.read_reply(sid, timeout=20)[-1])
    # no streaming field once it is done
    d = connect(b, "D")
    j = d.join(sid)
    t.ok("join after the reply: no streaming field", "streaming" not in j, repr(j))
    for x in (a, c, d):
        x.close()


def test_since_reconnect(t, b):
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    a.chat("before the drop")
    c.expect(type="session_update", update_type="message_added")
    a.read_reply(sid)
    last = c.read_reply(sid)[-1]["message_id"]
    c.close()
    a.expect(type="session_update", update_type="user_left")

    missed = []
    for text in ("missed one", "missed two", "missed three"):
        ack = a.chat(text)
        done = a.read_reply(sid)[-1]
        missed.append(ack["message"])
        missed.append({"id": done["message_id"], "role": "assistant", "content": text})
    c2 = connect(b, "B2")
    j = c2.join(sid, since=last)
    msgs = j.get("messages") or []
    t.eq("since: exactly the 6 missed messages (ids)", [m.get("id") for m in msgs],
         [m["id"] for m in missed])
    t.ok("since: the missed user messages equal their acknowledgements",
         len(msgs) == 6 and all(strict_equal(msgs[i], missed[i]) for i in (0, 2, 4)),
         repr(msgs[:1]))
    asst = [m for m in msgs if m.get("role") == "assistant"]
    t.eq("since: assistant replies with role and content",
         [(m.get("role"), m.get("content")) for m in asst],
         [("assistant", x) for x in ("missed one", "missed two", "missed three")])
    t.ok("since: every replayed message has id, role, content, created_at, connection_id",
         all({"id", "role", "content", "created_at", "connection_id"} <= set(m) and
             TS_RE.match(m.get("created_at") or "") for m in msgs), repr(msgs))
    t.eq("since: assistant replies have connection_id null",
         [m.get("connection_id") for m in asst], [None, None, None])
    t.eq("since: message_count 8", j.get("message_count"), 8)
    j = c2.join(sid, since=msgs[-1]["id"] if msgs else 0)
    t.eq("since=<newest id>: empty replay", j.get("messages"), [])
    a.close()
    c2.close()


def test_resend(t, b):
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    ack = a.chat("resend me", client_msg_id="cm-1")
    c.expect(type="session_update", update_type="message_added")
    a.read_reply(sid)
    c.read_reply(sid)
    orig = ack["message"]
    # resend on the same connection
    a.send({"type": "chat", "message": "resend me", "client_msg_id": "cm-1"})
    again = a.expect(type="session_update", update_type="message_added")
    t.eq("resend (same connection): the sender is acknowledged with the stored message",
         again.get("message"), orig)
    # resend after a reconnect
    a.close()
    c.expect(type="session_update", update_type="user_left")
    a2 = connect(b, "A2")
    a2.join(sid)
    c.expect(type="session_update", update_type="user_joined")
    a2.send({"type": "chat", "message": "resend me", "client_msg_id": "cm-1"})
    again = a2.expect(type="session_update", update_type="message_added")
    t.eq("resend after reconnect: same message (same id, original connection_id)",
         again.get("message"), orig)
    t.eq("resend: the other members see nothing", c.quiet(1.0), [])
    t.eq("resend: no second reply", a2.take_all(type=REPLY_TYPES), [])
    code, lines = sql(b.db, "select count(*), (select count(*) from messages where "
                      "session_id = '%s') from messages where client_msg_id = 'cm-1';" % sid)
    t.eq("resend: stored once (1 row with cm-1; user + one reply in the session)", lines,
         ["1|2"])
    # the same client_msg_id in another session is a new message
    s2 = a2.create_session()
    ack = a2.chat("resend me", client_msg_id="cm-1")
    t.ok("the same client_msg_id in another session is stored anew",
         ack["message"]["id"] != orig["id"] and ack.get("session_id") == s2, repr(ack))
    a2.read_reply(s2)
    a2.close()
    c.close()


def test_none(t):
    b = Broker(t, llm="none", name="broker-none")
    a = connect(b, "A")
    t.eq("none: server_info.model", a.received[0].get("server_info", {}).get("model"), "none")
    sid = a.create_session()
    ack = a.chat("nobody answers")
    t.eq("none: chat acknowledged", ack["message"]["content"], "nobody answers")
    t.eq("none: no status, response_start, chunk or response_complete",
         a.quiet(1.0, type=REPLY_TYPES), [])
    code, lines = sql(b.db, "select role, content from messages where session_id = '%s';" % sid)
    t.eq("none: the message is stored, alone", lines, ["user|nobody answers"])
    code, lines = sql(b.db, "select count(*) from reply_queue;")
    t.eq("none: no reply queued", lines, ["0"])
    a.close()
    b.stop()


def main(t):
    b = Broker(t)
    for name, fn in (("stream", test_stream), ("stop", test_stop),
                     ("stop edge cases", test_stop_edges), ("queue", test_queue),
                     ("join while streaming", test_join_streaming),
                     ("since after reconnect", test_since_reconnect),
                     ("client_msg_id resend", test_resend)):
        with t.section(name):
            fn(t, b)
        parley.close_clients()
    b.stop()
    with t.section("assistant none"):
        test_none(t)


parley.run(main)
