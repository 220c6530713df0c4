"""REST sessions and messages: create, list and page, read with limit/before, post,
clear, delete, unknown ids, concurrent posts, restart on the same database."""

import datetime
import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import SESSION_ID_RE, TS_RE, Rest, check_error  # noqa: E402

CREATED_KEYS = {"session_id", "model", "title", "reply_mode", "created_at"}
LIST_KEYS = {"sessions", "total", "limit", "offset"}
SESSION_KEYS = {"session_id", "title", "model", "reply_mode", "message_count", "clients",
                "created_at", "updated_at"}
DETAIL_KEYS = SESSION_KEYS | {"messages", "has_more"}
MESSAGE_KEYS = {"id", "seq", "role", "content", "created_at"}
POSTED_KEYS = {"id", "seq", "session_id", "role", "content", "created_at"}


def tick():
    """Lets the millisecond clock move so that updated_at values differ."""
    time.sleep(0.015)


def test_create(t, rest):
    r = rest.request("POST", "/sessions/new")  # no body at all
    t.eq("POST /sessions/new without body: 201", r.status, 201)
    b = r.body
    t.keys("POST /sessions/new: exactly session_id, model, title, created_at", b, CREATED_KEYS)
    if isinstance(b, dict):
        t.match("POST /sessions/new: session_id is 16 lowercase hex", b.get("session_id"),
                SESSION_ID_RE)
        t.eq("POST /sessions/new: model defaults to echo", b.get("model"), "echo")
        t.eq("POST /sessions/new: title defaults to null", b.get("title"), None)
        t.match("POST /sessions/new: created_at format", b.get("created_at"), TS_RE)

    r = rest.post("/sessions/new", {})
    t.eq("POST /sessions/new {}: 201", r.status, 201)
    r2 = rest.post("/sessions/new", {})
    t.ok("POST /sessions/new: ids differ", r.body.get("session_id") != r2.body.get("session_id"),
         "%r twice" % r.body.get("session_id"))

    r = rest.post("/sessions/new", {"model_id": "llama-3.1-8b", "title": "Trip to Lisbon ✈"})
    t.eq("POST /sessions/new with model_id and title: 201", r.status, 201)
    t.eq("POST /sessions/new: model is model_id", r.body.get("model"), "llama-3.1-8b")
    t.eq("POST /sessions/new: title as given (UTF-8)", r.body.get("title"), "Trip to Lisbon ✈")
    sid = r.body.get("session_id")
    d = rest.get("/sessions/%s" % sid).body
    t.eq("GET /sessions/{id}: title and model stored",
         (d.get("title"), d.get("model")), ("Trip to Lisbon ✈", "llama-3.1-8b"))
    t.eq("GET /sessions/{id}: created_at same as at creation", d.get("created_at"),
         r.body.get("created_at"))

    r = rest.post("/sessions/new", {"title": None})
    t.eq("POST /sessions/new title null: 201 and null", (r.status, r.body.get("title")),
         (201, None))
    r = rest.post("/sessions/new", {"title": ""})
    t.eq("POST /sessions/new title '': 201 and ''", (r.status, r.body.get("title")), (201, ""))
    r = rest.post("/sessions/new", {"title": "t" * 200})
    t.eq("POST /sessions/new title of 200 chars: 201", r.status, 201)
    r = rest.post("/sessions/new", {"title": "é" * 200})
    t.eq("POST /sessions/new title of 200 non-ASCII chars: 201", r.status, 201)
    r = rest.post("/sessions/new", {"model_id": "m" * 128})
    t.eq("POST /sessions/new model_id of 128 chars: 201", r.status, 201)
    check_error(t, "POST /sessions/new title of 201 chars",
                rest.post("/sessions/new", {"title": "t" * 201}), 400, "invalid_field", "title")
    check_error(t, "POST /sessions/new model_id ''",
                rest.post("/sessions/new", {"model_id": ""}), 400, "invalid_field", "model_id")
    check_error(t, "POST /sessions/new model_id of 129 chars",
                rest.post("/sessions/new", {"model_id": "m" * 129}), 400, "invalid_field",
                "model_id")


def test_utc(t):
    """Timestamps are UTC whatever the server's local time zone is."""
    r = Rest(t, env={"TZ": "Asia/Kathmandu"}, name="rest-tz-kathmandu")  # UTC+05:45
    b = r.post("/sessions/new", {}).body
    m = r.add_message(b["session_id"], "what time is it")
    now = datetime.datetime.now(datetime.timezone.utc)
    for what, ts in (("session created_at", b.get("created_at")),
                     ("message created_at", m.get("created_at"))):
        try:
            when = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
            skew = abs((now - when).total_seconds())
        except (TypeError, ValueError) as e:
            skew = "unparsable: %s" % e
        t.ok("TZ=Asia/Kathmandu: %s is UTC (within 60 s of now)" % what,
             isinstance(skew, float) and skew < 60, "%r vs now %s: %s" % (ts, now, skew))
    r.stop()


def test_messages(t, rest):
    sid = rest.new_session(title="messages")
    before = rest.get("/sessions/%s" % sid).body
    t.keys("GET /sessions/{id}: session fields + messages + has_more", before, DETAIL_KEYS)
    t.eq("GET /sessions/{id}: new session has no messages",
         (before.get("messages"), before.get("has_more"), before.get("message_count")),
         ([], False, 0))
    t.eq("GET /sessions/{id}: clients 0 with no broker", before.get("clients"), 0)
    t.ok("GET /sessions/{id}: updated_at not before created_at at first",
         (before.get("updated_at") or "") >= (before.get("created_at") or "~"),
         "%r vs %r" % (before.get("updated_at"), before.get("created_at")))
    tick()

    contents = ["hello", "héllo ✓ 日本語", 'quotes " and \\ backslash', "line1\nline2\ttab",
                "emoji 🎉"]
    posted = []
    for i, c in enumerate(contents):
        r = rest.post("/sessions/%s/messages" % sid, {"content": c})
        if i == 0:
            t.eq("POST messages: 201", r.status, 201)
            t.keys("POST messages: exactly id, seq, session_id, role, content, created_at",
                   r.body, POSTED_KEYS)
            t.is_int("POST messages: id int > 0", r.body.get("id"), 1)
            t.eq("POST messages: session_id", r.body.get("session_id"), sid)
            t.eq("POST messages: role user", r.body.get("role"), "user")
            t.match("POST messages: created_at format", r.body.get("created_at"), TS_RE)
            after1 = rest.get("/sessions/%s" % sid).body
            t.eq("POST messages: message_count becomes 1", after1.get("message_count"), 1)
            t.ok("POST messages: updated_at moves forward",
                 isinstance(after1.get("updated_at"), str)
                 and after1["updated_at"] > before["updated_at"],
                 "%r -> %r" % (before.get("updated_at"), after1.get("updated_at")))
            t.eq("POST messages: created_at unchanged", after1.get("created_at"),
                 before.get("created_at"))
        t.eq("POST messages: content %d echoed exactly" % i, r.body.get("content"), c)
        posted.append(r.body)
        tick()
    ids = [p["id"] for p in posted]
    t.ok("POST messages: ids strictly increase", ids == sorted(set(ids)), repr(ids))
    t.eq("POST messages: seq 1, 2, 3, ... in the session", [p["seq"] for p in posted],
         list(range(1, len(contents) + 1)))
    got = rest.get("/sessions/%s" % sid).body
    t.eq("GET session: messages[].seq as stored",
         [(m["id"], m["seq"]) for m in got.get("messages", [])],
         [(p["id"], p["seq"]) for p in posted])

    r = rest.post("/sessions/%s/messages" % sid, {"content": "no reply", "reply": False})
    t.eq("POST messages reply:false: 201", r.status, 201)
    posted.append(r.body)
    ids.append(r.body["id"])
    contents.append("no reply")

    d = rest.get("/sessions/%s" % sid).body
    msgs = d.get("messages", [])
    t.eq("GET /sessions/{id}: message_count", d.get("message_count"), 6)
    t.eq("GET /sessions/{id}: messages in ascending id order", [m.get("id") for m in msgs], ids)
    t.eq("GET /sessions/{id}: contents in order", [m.get("content") for m in msgs], contents)
    t.ok("GET /sessions/{id}: each message is exactly id, seq, role, content, created_at",
         all(isinstance(m, dict) and set(m) == MESSAGE_KEYS for m in msgs), repr(msgs[:1]))
    t.ok("GET /sessions/{id}: roles are user",
         all(m.get("role") == "user" for m in msgs), repr([m.get("role") for m in msgs]))
    t.ok("GET /sessions/{id}: created_at format",
         all(TS_RE.match(m.get("created_at", "")) for m in msgs),
         repr([m.get("created_at") for m in msgs]))
    t.eq("GET /sessions/{id}: created_at as returned by POST",
         [m.get("created_at") for m in msgs], [p.get("created_at") for p in posted])
    t.eq("GET /sessions/{id}: has_more false when all fit", d.get("has_more"), False)

    # limit / before paging, walking back through the history
    def page(q):
        r = rest.get("/sessions/%s?%s" % (sid, q))
        if r.status != 200:
            t.fail("GET /sessions/{id}?%s: status" % q, "%s %r" % (r.status, r.body))
            return None, None
        return [m["id"] for m in r.body.get("messages", [])], r.body.get("has_more")

    t.eq("?limit=2: newest two, has_more", page("limit=2"), (ids[4:6], True))
    t.eq("?limit=6: all, no more", page("limit=6"), (ids, False))
    t.eq("?limit=2&before=ids[4]: the two before", page("limit=2&before=%d" % ids[4]),
         (ids[2:4], True))
    t.eq("?before=ids[2]&limit=2: first two, no more", page("before=%d&limit=2" % ids[2]),
         (ids[0:2], False))
    t.eq("?limit=2&before=ids[1]: just the first", page("limit=2&before=%d" % ids[1]),
         (ids[0:1], False))
    t.eq("?before=ids[0]: nothing older", page("before=%d" % ids[0]), ([], False))
    t.eq("?before=big: everything", page("before=%d" % (ids[-1] + 1000)), (ids, False))
    t.eq("?limit=1000: accepted", page("limit=1000"), (ids, False))
    t.eq("?limit=1: newest only", page("limit=1"), (ids[5:6], True))
    r = rest.get("/sessions/%s?limit=2" % sid)
    t.eq("?limit=2: message_count is still the full count", r.body.get("message_count"), 6)

    # default limit is 100
    sid2 = rest.new_session(title="many")
    for i in range(105):
        rest.add_message(sid2, "m%d" % i)
    d = rest.get("/sessions/%s" % sid2).body
    t.eq("default limit 100: newest 100 returned",
         [m["content"] for m in d.get("messages", [])], ["m%d" % i for i in range(5, 105)])
    t.eq("default limit 100: has_more true", d.get("has_more"), True)
    t.eq("default limit 100: message_count 105", d.get("message_count"), 105)
    return sid, ids


def test_list(t, rest):
    # a fresh server so that the totals are exact
    total0 = rest.get("/sessions").body.get("total")
    made = []
    for i in range(5):
        made.append(rest.new_session(title="list %d" % i))
        tick()
    r = rest.get("/sessions")
    t.eq("GET /sessions: 200", r.status, 200)
    b = r.body
    t.keys("GET /sessions: exactly sessions, total, limit, offset", b, LIST_KEYS)
    t.eq("GET /sessions: total counts all sessions", b.get("total"), total0 + 5)
    t.eq("GET /sessions: default limit 50, offset 0", (b.get("limit"), b.get("offset")), (50, 0))
    items = b.get("sessions", [])
    t.ok("GET /sessions: each item has exactly the session fields",
         all(isinstance(s, dict) and set(s) == SESSION_KEYS for s in items), repr(items[:1]))
    t.ok("GET /sessions: clients 0 with no broker", all(s.get("clients") == 0 for s in items),
         repr([s.get("clients") for s in items]))
    t.ok("GET /sessions: timestamps formatted",
         all(TS_RE.match(s.get("created_at") or "") and TS_RE.match(s.get("updated_at") or "")
             for s in items), repr(items[:1]))
    t.eq("GET /sessions: newest first", [s["session_id"] for s in items[:5]], made[::-1])

    # posting to the oldest moves it to the front
    rest.add_message(made[0], "bump")
    tick()
    items = rest.get("/sessions").body.get("sessions", [])
    t.eq("GET /sessions: a new message moves the session to the front",
         [s["session_id"] for s in items[:5]], [made[0]] + made[1:][::-1])
    t.eq("GET /sessions: message_count of the bumped session", items[0].get("message_count"), 1)
    full = [s["session_id"] for s in items]

    # paging
    got = []
    for off in range(0, len(full) + 2, 2):
        r = rest.get("/sessions?limit=2&offset=%d" % off)
        b = r.body
        t.eq("GET /sessions?limit=2&offset=%d: limit, offset, total echoed" % off,
             (b.get("limit"), b.get("offset"), b.get("total")), (2, off, len(full)))
        got += [s["session_id"] for s in b.get("sessions", [])]
    t.eq("GET /sessions: pages of 2 put together give the full list", got, full)
    r = rest.get("/sessions?offset=1000")
    t.eq("GET /sessions?offset past the end: empty page, total kept",
         (r.status, r.body.get("sessions"), r.body.get("total")), (200, [], len(full)))
    r = rest.get("/sessions?limit=500")
    t.eq("GET /sessions?limit=500: accepted", (r.status, r.body.get("limit")), (200, 500))
    r = rest.get("/sessions?limit=1")
    t.eq("GET /sessions?limit=1: one session", len(r.body.get("sessions", [])), 1)
    return made


def test_clear(t, rest):
    sid = rest.new_session(title="clear me")
    last = None
    for c in ("a", "b", "c"):
        last = rest.add_message(sid, c)["id"]
    tick()
    upd = rest.get("/sessions/%s" % sid).body.get("updated_at")
    r = rest.post("/sessions/%s/clear" % sid)
    t.eq("POST clear: 200", r.status, 200)
    t.eq("POST clear: {cleared: 3, session_id}", r.body, {"cleared": 3, "session_id": sid})
    d = rest.get("/sessions/%s" % sid)
    t.eq("after clear: session still exists", d.status, 200)
    t.eq("after clear: no messages, count 0, has_more false",
         (d.body.get("messages"), d.body.get("message_count"), d.body.get("has_more")),
         ([], 0, False))
    t.ok("after clear: updated_at not earlier", (d.body.get("updated_at") or "") >= upd,
         "%r -> %r" % (upd, d.body.get("updated_at")))
    r = rest.post("/sessions/%s/clear" % sid, {})
    t.eq("POST clear again: cleared 0", (r.status, r.body), (200, {"cleared": 0, "session_id": sid}))
    m = rest.add_message(sid, "after clear")
    t.ok("after clear: message ids keep increasing", m["id"] > last, "%r after %r" % (m["id"], last))
    d = rest.get("/sessions/%s" % sid).body
    t.eq("after clear: only the new message", [x["content"] for x in d.get("messages", [])],
         ["after clear"])
    t.eq("after clear: message_count 1", d.get("message_count"), 1)
    return m["id"]


def test_delete(t, rest, last_id):
    sid = rest.new_session(title="delete me")
    mid = rest.add_message(sid, "doomed")["id"]
    total = rest.get("/sessions").body.get("total")
    r = rest.delete("/sessions/%s" % sid)
    t.eq("DELETE /sessions/{id}: 200 {deleted:true, session_id}", (r.status, r.body),
         (200, {"deleted": True, "session_id": sid}))
    check_error(t, "GET deleted session", rest.get("/sessions/%s" % sid), 404,
                "session_not_found")
    check_error(t, "DELETE deleted session", rest.delete("/sessions/%s" % sid), 404,
                "session_not_found")
    check_error(t, "POST message to deleted session",
                rest.post("/sessions/%s/messages" % sid, {"content": "x"}), 404,
                "session_not_found")
    check_error(t, "clear deleted session", rest.post("/sessions/%s/clear" % sid), 404,
                "session_not_found")
    lst = rest.get("/sessions?limit=500").body
    t.eq("after DELETE: total one less", lst.get("total"), total - 1)
    t.ok("after DELETE: not listed", sid not in [s["session_id"] for s in lst.get("sessions", [])],
         "still listed")
    other = rest.new_session()
    m = rest.add_message(other, "later")
    t.ok("after DELETE: message ids never reused", m["id"] > mid > last_id,
         "%r, deleted %r, before %r" % (m["id"], mid, last_id))


def test_unknown_ids(t, rest):
    for bad in ("0123456789abcdef", "0123456789ABCDEF", "xyz", "0123456789abcdef0",
                "0123456789abcde", "%20", "0123456789abcd%00"):
        check_error(t, "GET /sessions/%s" % bad, rest.get("/sessions/%s" % bad), 404,
                    "session_not_found")
    sid = "fedcba9876543210"
    check_error(t, "DELETE unknown session", rest.delete("/sessions/%s" % sid), 404,
                "session_not_found")
    check_error(t, "clear unknown session", rest.post("/sessions/%s/clear" % sid), 404,
                "session_not_found")
    check_error(t, "POST message to unknown session",
                rest.post("/sessions/%s/messages" % sid, {"content": "hi"}), 404,
                "session_not_found")
    check_error(t, "POST message to non-hex session id",
                rest.post("/sessions/not-an-id/messages", {"content": "hi"}), 404,
                "session_not_found")


def test_concurrent_posts(t, rest):
    sid = rest.new_session(title="concurrent")
    results = []
    lock = threading.Lock()

    def worker(n):
        for i in range(10):
            try:
                r = rest.post("/sessions/%s/messages" % sid, {"content": "w%d-%d" % (n, i)})
                out = (r.status, r.body.get("id") if isinstance(r.body, dict) else None)
            except Exception as e:  # noqa: BLE001
                out = ("exception", repr(e))
            with lock:
                results.append(out)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    statuses = [s for s, _ in results]
    t.eq("concurrent: 80 POSTs from 8 threads all 201", statuses, [201] * 80)
    ids = [i for _, i in results]
    t.eq("concurrent: 80 distinct ids", len(set(ids)), 80)
    d = rest.get("/sessions/%s?limit=1000" % sid).body
    t.eq("concurrent: message_count 80", d.get("message_count"), 80)
    t.eq("concurrent: history holds every id", sorted(m["id"] for m in d.get("messages", [])),
         sorted(ids))


def test_restart(t, rest, sid, ids):
    contents = [m["content"] for m in rest.get("/sessions/%s" % sid).body["messages"]]
    lst = rest.get("/sessions?limit=500").body
    rest.stop()
    again = Rest(t, tmpdir=rest.tmpdir, name="parley-rest-restarted")
    d = again.get("/sessions/%s" % sid)
    t.eq("restart: session still there", d.status, 200)
    t.eq("restart: same message ids", [m["id"] for m in d.body.get("messages", [])], ids)
    t.eq("restart: same contents", [m["content"] for m in d.body.get("messages", [])], contents)
    t.eq("restart: same session list", again.get("/sessions?limit=500").body, lst)
    m = again.add_message(sid, "after restart")
    t.ok("restart: new ids continue after the old ones", m["id"] > max(ids),
         "%r vs %r" % (m["id"], max(ids)))
    again.stop()


def test_models(t):
    """--llm-models: without it only the configured model may be picked (SPEC 6 bounds)."""
    r = Rest(t, name="rest-default-models")
    check_error(t, "POST /sessions/new model_id not offered",
                r.post("/sessions/new", {"model_id": "llama-3.1-8b"}), 400, "invalid_field",
                "--llm-models")
    ok = r.post("/sessions/new", {"model_id": "echo"})
    t.eq("POST /sessions/new model_id of the configured model: 201", (ok.status,
         ok.body.get("model")), (201, "echo"))
    r.stop()


def main(t):
    # the sessions below pick models of their own: offer any
    rest = Rest(t, flags={"--llm-models": "*"})
    with t.section("models"):
        test_models(t)
    with t.section("list"):
        test_list(t, rest)
    with t.section("create"):
        test_create(t, rest)
    sid, ids = None, None
    with t.section("messages"):
        sid, ids = test_messages(t, rest)
    last = 0
    with t.section("clear"):
        last = test_clear(t, rest)
    with t.section("delete"):
        test_delete(t, rest, last)
    with t.section("unknown ids"):
        test_unknown_ids(t, rest)
    with t.section("UTC timestamps"):
        test_utc(t)
    with t.section("concurrent posts"):
        test_concurrent_posts(t, rest)
    if sid:
        with t.section("restart"):
            test_restart(t, rest, sid, ids)
    rest.stop()


parley.run(main)
