"""Many brokers through Redis (SPEC 8), on one machine: two or three parley-broker
processes and one parley-rest over one database (the pass's: a shared SQLite file, or
PostgreSQL), all with --redis on a throwaway redis-server this test starts.

Members of one session on different brokers see the same messages in seq order, none
missing, none twice; typing and presence cross; REST's POST, clear and delete reach every
broker through Redis; Redis stopped for 5 s during chat loses nothing and keeps the order;
a broker started later catches up with since; a client whose broker is killed (kill -9)
rejoins another with since and misses nothing; what Redis carries is checked (garbage on
Parley's channels crashes nothing and reaches no client)."""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker, Rest, run_cli  # noqa: E402
from redis import REDIS_SERVER, RedisServer  # noqa: E402

WAIT = 30.0  # seconds: a wide margin for a loaded 2-core machine under ASan


def publish(redis, channel, data):
    with redis.client(decode=False) as c:
        return c.command("PUBLISH", channel, data)


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def added(c, n, timeout=WAIT):
    """The next n message_added frames of c, in arrival order."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            got.append(c.expect(timeout=left, type="session_update",
                                update_type="message_added"))
        except parley.ExpectError:
            break
    return got


def seqs(frames):
    return [f.get("message", {}).get("seq") for f in frames]


def story(frames):
    return [(f["message"].get("seq"), f["message"].get("id"), f["message"].get("content"))
            for f in frames]


def start_broker(t, rest, tmpdir, redis, node, llm="none"):
    return Broker(t, tmpdir=tmpdir, llm=llm, name="broker-" + node,
                  flags={"--db": rest.db, "--redis": redis.url, "--node-id": node,
                         "--notify-socket": os.path.join(tmpdir, node + ".sock")})


def test_interleaved(t, rest, b1, b2):
    t.section("interleaved chat on two brokers")
    a, b, c = connect(b1, "A@b1"), connect(b2, "B@b2"), connect(b1, "C@b1")
    sid = rest.new_session(title="relay")
    for x in (a, b, c):
        x.join(sid)
    n = 30
    def send(x, who):
        for i in range(n):
            x.send({"type": "chat", "message": "%s %d" % (who, i)})
    threads = [threading.Thread(target=send, args=(a, "a")),
               threading.Thread(target=send, args=(b, "b"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    fa, fb, fc = added(a, 2 * n), added(b, 2 * n), added(c, 2 * n)
    want = list(range(1, 2 * n + 1))
    t.eq("member on b1 (the sender's broker for half) sees seq 1..%d in order" % (2 * n),
         seqs(fa), want)
    t.eq("member on b2 sees seq 1..%d in order" % (2 * n), seqs(fb), want)
    t.eq("a second member on b1 sees seq 1..%d in order" % (2 * n), seqs(fc), want)
    t.eq("every member saw the same messages (seq, id, content)", story(fb), story(fa))
    t.eq("... and the third too", story(fc), story(fa))
    t.eq("nothing more arrives (no duplicates)",
         [x.quiet(1.0, type="session_update", update_type="message_added") for x in (a, b, c)],
         [[], [], []])
    contents = sorted(m for _, _, m in story(fa))
    t.eq("all %d chats, each once" % (2 * n), contents,
         sorted(["a %d" % i for i in range(n)] + ["b %d" % i for i in range(n)]))
    # the order of each sender's own chats is kept
    t.eq("a's chats in the order sent",
         [m for _, _, m in story(fb) if m.startswith("a ")], ["a %d" % i for i in range(n)])
    return sid, a, b, c


def test_typing_presence(t, sid, a, b, b1, b2):
    t.section("typing and presence across brokers")
    b.clear()
    a.send({"type": "typing_start"})
    ev = b.expect(timeout=WAIT, type="session_update", update_type="user_typing")
    t.eq("typing on b1 reaches a member on b2", (ev.get("session_id"), ev.get("connection_id"),
                                                 ev.get("typing")), (sid, a.id, True))
    a.send({"type": "typing_stop"})
    ev = b.expect(timeout=WAIT, type="session_update", update_type="user_typing")
    t.eq("typing_stop too", (ev.get("connection_id"), ev.get("typing")), (a.id, False))
    d = connect(b2, "D@b2")
    a.clear()
    joined = d.join(sid)
    t.eq("session_joined on b2 counts the members on both brokers (clients)",
         joined.get("clients"), 4)
    ev = a.expect(timeout=WAIT, type="session_update", update_type="user_joined")
    t.eq("a join on b2 reaches a member on b1 as user_joined, clients counting both brokers",
         (ev.get("connection_id"), ev.get("clients")), (d.id, 4))
    d.send({"type": "leave_session"})
    ev = a.expect(timeout=WAIT, type="session_update", update_type="user_left")
    t.eq("a leave on b2 reaches b1 as user_left", (ev.get("connection_id"), ev.get("clients")),
         (d.id, 3))
    d.close()
    r = connect(b1, "R@b1")
    t.eq("a join on b1 counts the members on b2 too", r.join(sid).get("clients"), 4)
    r.close()


def test_rest(t, rest, sid, a, b, c):
    t.section("REST through Redis")
    r = rest.post("/sessions/%s/messages" % sid, {"content": "from rest"})
    t.eq("POST /sessions/{id}/messages: 201", r.status, 201)
    seq = r.body.get("seq") if isinstance(r.body, dict) else None
    for x, where in ((a, "b1"), (b, "b2")):
        got = added(x, 1)
        t.eq("REST's message reaches the member on %s with its seq" % where,
             [(f["message"].get("content"), f["message"].get("seq")) for f in got],
             [("from rest", seq)])
    added(c, 1)


def test_redis_outage(t, redis, sid, a, b, c, b2):
    t.section("Redis stopped for 5 s during chat")
    a.chat("before the outage")
    for x in (b, c):
        added(x, 1)
    for x in (a, b, c):
        x.clear()
    redis.stop(kill=True)
    down_at = time.monotonic()
    sent = []
    for i in range(5):
        a.send({"type": "chat", "message": "a during %d" % i})
        b.send({"type": "chat", "message": "b during %d" % i})
        sent += ["a during %d" % i, "b during %d" % i]
        time.sleep(0.4)
    time.sleep(max(0.0, 5.0 - (time.monotonic() - down_at)))
    early = {x: x.take_all(type="session_update", update_type="message_added")
             for x in (a, b)}
    t.eq("while Redis is down, b1 stores and acknowledges its own chats",
         sorted(m for _, _, m in story(early[a]) if m.startswith("a ")),
         ["a during %d" % i for i in range(5)])
    t.eq("... and b2 its own", sorted(m for _, _, m in story(early[b]) if m.startswith("b ")),
         ["b during %d" % i for i in range(5)])
    e = connect(b2, "E@b2")
    t.eq("a join on b2 while Redis is down counts the members b2 knew of (clients)",
         e.join(sid).get("clients"), 4)
    redis.start()
    b.send({"type": "chat", "message": "after the outage"})
    want = sorted(sent + ["after the outage"])
    got = {}
    for x in (a, b, c):
        frames = early.get(x, [])
        got[x] = frames + added(x, 11 - len(frames))
    for x, who in ((a, "the sender on b1"), (b, "the sender on b2"),
                   (c, "another member on b1")):
        t.eq("%s ends with all 11 chats of and after the outage, each once" % who,
             sorted(m for _, _, m in story(got[x])), want)
        t.ok("... in seq order", seqs(got[x]) == sorted(seqs(got[x])), seqs(got[x]))
    t.eq("all three saw them in the same order", [story(got[b]), story(got[c])],
         [story(got[a]), story(got[a])])
    for x in (a, c):
        ev = x.expect(timeout=WAIT, type="session_update", update_type="user_joined",
                      connection_id=e.id)
        t.eq("the join on b2 during the outage reaches %s on b1 once Redis is back "
             "(its broker's roster), clients counting both brokers" % x.name,
             ev.get("clients"), 4)
    e.send({"type": "leave_session"})
    for x in (a, c):
        ev = x.expect(timeout=WAIT, type="session_update", update_type="user_left",
                      connection_id=e.id)
        t.eq("... and its leave afterwards, as user_left (clients)", ev.get("clients"), 3)
    e.close()


def test_late_broker(t, rest, tmpdir, redis, sid, a):
    t.section("a broker started later")
    b3 = start_broker(t, rest, tmpdir, redis, "b3")
    e = connect(b3, "E@b3")
    hist = rest.get("/sessions/%s?limit=500" % sid).body.get("messages") or []
    first = min(m["id"] for m in hist)
    joined = e.join(sid, since=first)
    replay = joined.get("messages") or []
    t.eq("a broker started later replays the history after the first message with since",
         [m.get("seq") for m in replay], [m.get("seq") for m in hist[1:]])
    # told live, or (joined before its Redis link was up) by its roster once it is
    ev = a.expect(timeout=WAIT, type="session_update", update_type="user_joined",
                  connection_id=e.id)
    t.eq("its member's join reaches b1 (user_joined, clients counting every broker)",
         ev.get("clients"), 4)
    a.chat("to the late broker")
    got = added(e, 1)
    t.eq("and then hears b1's chats live",
         [f["message"].get("content") for f in got], ["to the late broker"])
    return b3, e


def test_broker_killed(t, sid, a, b, b2, b1):
    t.section("a broker killed: its client rejoins another with since")
    b.clear()
    a.chat("last before the kill")
    last = added(b, 1)
    last_id = last[0]["message"]["id"] if last else 0
    b2.kill9()
    missed = ["while away %d" % i for i in range(3)]
    for m in missed:
        a.chat(m)
    ev = a.expect(timeout=WAIT, type="session_update", update_type="user_left",
                  pred=lambda f: f.get("connection_id") == b.id)
    t.ok("the killed broker's member leaves the session for the others within a few seconds "
         "(user_left)", bool(ev))
    b.abort()
    again = connect(b1, "B-again@b1")
    joined = again.join(sid, since=last_id)
    t.eq("rejoining b1 with since replays exactly what was missed, in seq order",
         [m.get("content") for m in joined.get("messages") or []], missed)


def test_hostile(t, redis, sid, a, b1):
    t.section("what Redis carries is checked")
    a.clear()
    ch = "parley:0:s:%s" % sid
    junk = [b"not json", b"[1,2]", b'{"node":"x"}', b'{"node":"x","ev":{"type":"pong"}}',
            b'{"node":"x","ev":{"type":"session_update","session_id":"0000000000000000",'
            b'"update_type":"user_typing"}}',
            b'{"node":"x","seq":-1,"ev":{"type":"session_update","session_id":"%s"}}' %
            sid.encode(),
            b'{"node":"x","seq":"7","ev":{"type":"chunk","session_id":"%s"}}' % sid.encode(),
            b"\xff\xfe invalid utf-8",
            b"x" * (3 << 20)]
    for j in junk:
        publish(redis, ch, j)
        publish(redis, "parley:0:all", j)
    publish(redis, "parley:0:s:zz", b'{"node":"x","ev":{"type":"chunk"}}')
    t.ok("the broker answers ping after garbage on its channels", a.ping_ok(timeout=WAIT))
    t.eq("no client got anything from the garbage",
         [f for f in a.quiet(1.0) if f.get("type") != "pong"], [])
    t.ok("the broker is still running", b1.alive())


def main(t):
    tmpdir = parley.make_tmpdir()
    if not os.access(REDIS_SERVER, os.X_OK):
        t.skip("relay", "redis-server is not installed (make deps installs it)")
        return
    redis = RedisServer(tmpdir=tmpdir).start()
    try:
        t.section("flags")
        rc, out, err = run_cli("parley-broker", ["--redis", "http://x", "--port", "0"])
        t.eq("a bad --redis exits 2", rc, 2)
        t.ok("... saying what a Redis URL looks like", "redis://" in err and "HOST" in err, err)
        rest = Rest(t, tmpdir=tmpdir, flags={"--redis": redis.url})
        b1 = start_broker(t, rest, tmpdir, redis, "b1")
        b2 = start_broker(t, rest, tmpdir, redis, "b2")
        sid, a, b, c = test_interleaved(t, rest, b1, b2)
        test_typing_presence(t, sid, a, b, b1, b2)
        test_rest(t, rest, sid, a, b, c)
        test_redis_outage(t, redis, sid, a, b, c, b2)
        b3, _ = test_late_broker(t, rest, tmpdir, redis, sid, a)
        test_hostile(t, redis, sid, a, b1)
        test_broker_killed(t, sid, a, b, b2, b1)
        t.section("REST clear and delete reach every broker")
        d = connect(b1, "F@b1")
        r = rest.post("/sessions/new", {"title": "to delete"})
        sid2 = r.body["session_id"]
        d.join(sid2)
        g = connect(b3, "G@b3")
        g.join(sid2)
        rest.post("/sessions/%s/clear" % sid2, {})
        for x, where in ((d, "b1"), (g, "b3")):
            ev = x.expect(timeout=WAIT, type="session_update", update_type="history_cleared")
            t.eq("history_cleared reaches the member on %s" % where, ev.get("message_count"), 0)
        rest.delete("/sessions/%s" % sid2)
        for x, where in ((d, "b1"), (g, "b3")):
            ev = x.expect(timeout=WAIT, type="session_update", update_type="session_deleted")
            t.eq("session_deleted reaches the member on %s" % where, ev.get("session_id"), sid2)
    finally:
        redis.destroy()


if __name__ == "__main__":
    parley.run(main)
