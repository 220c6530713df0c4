"""One owner per reply, and its takeover (SPEC 8), on one machine: two brokers with the
echo assistant over one database and a throwaway Redis.

A chat on one broker is answered once, by one broker, and the members on the other broker
watch it stream. When the broker generating a reply is killed (kill -9) mid-stream, the
other takes the job over: the text streamed so far is stored with status incomplete,
members get response_complete with interrupted: true, and the message is answered again;
a member of the killed broker rejoins the survivor with since and ends with the same
history as a member that never disconnected."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, one_of, sql  # noqa: E402
from redis import REDIS_SERVER, RedisServer  # noqa: E402

WAIT = 30.0  # a wide margin for a loaded 2-core machine under ASan
REPLY = one_of("status", "response_start", "chunk", "response_complete")


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def start_broker(t, rest, tmpdir, redis, node):
    return Broker(t, tmpdir=tmpdir, llm="echo", name="broker-" + node,
                  flags={"--db": rest.db, "--redis": redis.url, "--node-id": node,
                         "--notify-socket": os.path.join(tmpdir, node + ".sock")})


def reply_frames(c, timeout=WAIT):
    """Frames of one reply through its response_complete."""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = c.expect(timeout=max(0.1, deadline - time.monotonic()), type=REPLY)
        frames.append(f)
        if f.get("type") == "response_complete":
            break
    return frames


def text_of(frames):
    return "".join(f.get("text", "") for f in frames if f.get("type") == "chunk")


def rows(db, sid):
    _, lines = sql(db, "select role, coalesce(status, ''), content from messages where "
                   "session_id = '%s' order by seq;" % sid)
    return [tuple(ln.split("|", 2)) for ln in lines]


def test_one_owner(t, rest, b1, b2):
    t.section("a reply is generated once, and streams to members on both brokers")
    a, b = connect(b1, "A@b1"), connect(b2, "B@b2")
    sid = rest.new_session(title="one owner")
    a.join(sid)
    b.join(sid)
    text = "one two three four five"
    a.send({"type": "chat", "message": text})
    fa, fb = reply_frames(a), reply_frames(b)
    t.eq("the member on b1 watches the reply stream", text_of(fa), text)
    t.eq("the member on b2 watches the same reply", text_of(fb), text)
    ids = {f.get("response_id") for f in fa + fb if f.get("response_id")}
    t.eq("one reply (one response_id) on both brokers", len(ids), 1)
    t.eq("nothing more arrives: no second reply", [x.quiet(2.0, type=REPLY) for x in (a, b)],
         [[], []])
    t.eq("the database holds one user message and one complete reply",
         rows(rest.db, sid), [("user", "", text), ("assistant", "complete", text)])
    got = rest.post("/sessions/%s/messages" % sid, {"content": "from rest", "reply": True})
    t.eq("POST with reply: 201", got.status, 201)
    fa, fb = reply_frames(a), reply_frames(b)
    t.eq("REST's reply request is answered once, seen on both brokers",
         (text_of(fa), text_of(fb)), ("from rest", "from rest"))
    t.eq("no second reply to it", [x.quiet(2.0, type=REPLY) for x in (a, b)], [[], []])
    _, lines = sql(rest.db, "select count(*) from messages where session_id = '%s' and "
                   "role = 'assistant';" % sid)
    t.eq("two replies stored in all", lines, ["2"])
    t.section("stop from a member on the other broker")
    long_text = " ".join("s%d" % i for i in range(300))
    a.send({"type": "chat", "message": long_text})
    for _ in range(5):
        b.expect(timeout=WAIT, type="chunk")
    b.send({"type": "stop"})
    ends = [[f for f in reply_frames(x) if f.get("type") == "response_complete"] for x in (a, b)]
    t.eq("stop sent on b2 ends the reply on both brokers (stopped: true)",
         [[e.get("stopped") for e in x] for x in ends], [[True], [True]])
    _, lines = sql(rest.db, "select status from messages where session_id = '%s' and "
                   "role = 'assistant' order by seq desc limit 1;" % sid)
    t.eq("the stopped reply is stored as stopped", lines, ["stopped"])
    for x in (a, b):
        x.close()


def test_takeover(t, rest, tmpdir, redis, brokers):
    t.section("the broker generating a reply is killed: another takes it over")
    b1, b2 = brokers
    a, b = connect(b1, "A@b1"), connect(b2, "B@b2")
    sid = rest.new_session(title="takeover")
    a.join(sid)
    b.join(sid)
    words = ["w%d" % i for i in range(600)]  # 20 ms a word: 12 s of streaming
    text = " ".join(words)
    ack = a.chat(text)
    user_id = ack["message"]["id"]
    seen = []
    deadline = time.monotonic() + WAIT
    while len(seen) < 80 and time.monotonic() < deadline:
        seen.append(b.expect(timeout=WAIT, type=REPLY))
    first_id = next((f.get("response_id") for f in seen if f.get("response_id")), None)
    _, owner = sql(rest.db, "select owner from reply_queue where message_id = %d;" % user_id)
    owner = owner[0] if owner else "?"
    t.ok("the reply's lease is held by one of the brokers", owner in ("b1", "b2"), owner)
    dead, alive = (b1, b2) if owner == "b1" else (b2, b1)
    watcher, orphan = (b, a) if dead is b1 else (a, b)
    dead.kill9()
    killed_at = time.monotonic()
    # the watcher is on the surviving broker: it sees the end of the first reply, then a
    # new one
    frames = reply_frames(watcher, timeout=WAIT)
    watcher_seen = text_of((seen if watcher is b else []) + frames)
    cut = [f for f in frames if f.get("type") == "response_complete"]
    took = time.monotonic() - killed_at
    t.diag("takeover: response_complete interrupted %.2f s after the kill" % took)
    cut = cut[0] if cut else {}
    t.eq("members on the survivor get response_complete with interrupted: true for the "
         "first reply", (cut.get("response_id"), cut.get("interrupted"), cut.get("stopped")),
         (first_id, True, False))
    t.ok("... within 10 s of the kill (SPEC 8: 5 s; the margin is for a loaded machine)",
         took < 10.0, "%.2f s" % took)
    again = reply_frames(watcher, timeout=WAIT + 15)
    done = [f for f in again if f.get("type") == "response_complete"]
    t.eq("then the message is answered again, whole", (text_of(again), bool(done) and
                                                       done[0].get("interrupted")),
         (text, None))
    stored = rows(rest.db, sid)
    t.eq("stored: the user message, the interrupted reply (incomplete), the new reply",
         [(r[0], r[1]) for r in stored],
         [("user", ""), ("assistant", "incomplete"), ("assistant", "complete")])
    partial = stored[1][2] if len(stored) > 1 else ""
    t.ok("the incomplete reply holds what was streamed: a prefix of the message, at least "
         "what the watcher saw", text.startswith(partial) and partial.startswith(
             watcher_seen or "") and len(partial) > 0,
         "stored %d chars, watcher saw %d" % (len(partial), len(watcher_seen or "")))
    t.eq("the interrupted reply's message_id is the stored incomplete reply",
         cut.get("message_id"), int(sql(rest.db, "select id from messages where session_id = "
                                        "'%s' and status = 'incomplete';" % sid)[1][0] or 0))
    # the member of the dead broker rejoins the survivor with since
    orphan.abort()
    back = connect(alive, "back")
    joined = back.join(sid, since=user_id)
    got = [(m.get("role"), m.get("content")) for m in joined.get("messages") or []]
    t.eq("the member of the killed broker rejoins the survivor with since and gets the "
         "interrupted and the new reply, as stored",
         got, [("assistant", partial), ("assistant", text)])
    h = rest.get("/sessions/%s?limit=50" % sid).body.get("messages") or []
    t.eq("REST history: the same three messages", [m.get("content") for m in h],
         [text, partial, text])
    return alive


def main(t):
    if not os.access(REDIS_SERVER, os.X_OK):
        t.skip("takeover", "redis-server is not installed (make deps installs it)")
        return
    tmpdir = parley.make_tmpdir()
    redis = RedisServer(tmpdir=tmpdir).start()
    try:
        rest = Rest(t, tmpdir=tmpdir, flags={"--redis": redis.url})
        b1 = start_broker(t, rest, tmpdir, redis, "b1")
        b2 = start_broker(t, rest, tmpdir, redis, "b2")
        test_one_owner(t, rest, b1, b2)
        test_takeover(t, rest, tmpdir, redis, (b1, b2))
    finally:
        redis.destroy()


if __name__ == "__main__":
    parley.run(main)
