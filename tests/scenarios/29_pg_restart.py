"""PostgreSQL going away and processes killed, on PostgreSQL (SPEC 2, 6, 7; PostgreSQL
passes only, skipped with the reason elsewhere). The file runs its own cluster
(tests/lib/pgcluster.py), since it stops and restarts it, which the pass's shared cluster
must not see.

(a) kill -9 of parley-broker while a burst of chats is answered and a reply streams, and
    of parley-rest while messages are posted: everything acknowledged (message_added,
    response_complete, 201) is stored, the interrupted reply is produced after the
    restart, a rejoin with `since` gets exactly what came after, seq runs 1..n.
(b) the server stopped during chat (pg_ctl stop -m fast): while it is down REST answers
    503 with the JSON error body (code unavailable) and /health 503 degraded, the broker
    answers chats (and create_session) with `error` code `unavailable` naming the request,
    pings are answered, nothing is stored that was answered unavailable, no connection is
    closed; once the server is started again both serve again by themselves; every
    acknowledged message is in the database, resending the refused ones with their
    client_msg_id stores each exactly once, seq runs 1..n with the acknowledged seqs.
(c) pg_ctl restart -m immediate (the server crashes and recovers) while chats and REST
    posts flow: the same.
"""

import http.client
import os
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
import pgcluster  # noqa: E402
from parley import Broker, Rest, check_error, check_reply, one_of, sql, strict_equal  # noqa: E402

ANSWER_S = 60.0   # an answer (or an error) per request: ASan on a loaded 2-core machine
RESUME_S = 30.0   # both serve again this soon after the server is back (a few s expected)
FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}  # bursts of chats are the point


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def poll(fn, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if strict_equal(got, want) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def stored(db, sid):
    """{content: (id, seq)} of the session's messages; raises when psql fails."""
    code, lines = sql(db, "select id, seq, content from messages where session_id = '%s';"
                      % sid)
    if code != 0:
        raise RuntimeError("psql: %r" % lines)
    out = {}
    for ln in lines:
        i, s, content = ln.split("|", 2)
        out[content] = (int(i), int(s))
    return out


def seqs(db, sid):
    return sql(db, "select seq from messages where session_id = '%s' order by seq;" % sid)[1]


def check_seq(t, name, db, sid, acks):
    """seq runs 1..n in the session, and every acknowledgement carried its stored seq."""
    got = seqs(db, sid)
    t.eq("%s: seq runs 1..n, no gap, none twice" % name, got,
         [str(i) for i in range(1, len(got) + 1)])
    code, lines = sql(db, "select id, seq from messages where session_id = '%s';" % sid)
    rows = {int(i): int(s) for i, s in (ln.split("|") for ln in lines)}
    bad = [(m.get("id"), m.get("seq"), rows.get(m.get("id"))) for m in acks
           if m.get("seq") != rows.get(m.get("id"))]
    t.ok("%s: every message_added carried the seq it is stored with" % name, not bad,
         "(id, acked seq, stored seq): %r" % bad[:5])


def is_ack(m, cmid=None):
    return (isinstance(m, dict) and m.get("type") == "session_update" and
            m.get("update_type") == "message_added" and isinstance(m.get("message"), dict) and
            (cmid is None or m["message"].get("client_msg_id") == cmid))


def answers(c, cmids, timeout):
    """Waits until each chat sent by c with a client_msg_id of cmids is answered: the
    acknowledgement (message_added naming it) or an error naming it. Returns
    ({cmid: message}, {cmid: error frame}, [unanswered cmids], [errors naming none])."""
    want = set(cmids)
    acked, refused, stray = {}, {}, []
    deadline = time.monotonic() + timeout
    while len(acked) + len(refused) < len(want) and time.monotonic() < deadline:
        for m in c.take_all(pred=lambda m: is_ack(m) and m["message"].get("client_msg_id")
                            in want):
            acked[m["message"]["client_msg_id"]] = m["message"]
        for e in c.take_all(type="error"):
            if e.get("client_msg_id") in want:
                refused[e["client_msg_id"]] = e
            else:
                stray.append(e)
        time.sleep(0.05)
    return acked, refused, sorted(want - set(acked) - set(refused)), stray


def chat(c, text, cmid):
    c.send({"type": "chat", "message": text, "client_msg_id": cmid})


def until_acked(c, text, cmid, timeout):
    """Sends the chat again and again (same client_msg_id: safe resend) until it is
    acknowledged; returns (message or None, seconds taken, [errors meanwhile])."""
    t0 = time.monotonic()
    errors = []
    while time.monotonic() - t0 < timeout:
        chat(c, text, cmid)
        acked, refused, _, stray = answers(c, [cmid], ANSWER_S)
        errors += list(refused.values()) + stray
        if cmid in acked:
            return acked[cmid], time.monotonic() - t0, errors
        time.sleep(0.5)
    return None, time.monotonic() - t0, errors


def rest_until(rest, method, path, body, want, timeout):
    """Repeats the request until it answers status want; returns (response, seconds)."""
    t0 = time.monotonic()
    r = None
    while time.monotonic() - t0 < timeout:
        try:
            r = rest.request(method, path, body=body, timeout=ANSWER_S)
            if r.status == want:
                break
        except (OSError, http.client.HTTPException) as e:
            r = parley.Response((None, {}, repr(e)))
        time.sleep(0.2)
    return r, time.monotonic() - t0


class ChatSender(threading.Thread):
    """Sends chats "chat PREFIX-NNN" (client_msg_id PREFIX-NNN) every `interval` seconds
    until stopped, so that some are in flight whatever happens meanwhile."""

    def __init__(self, c, prefix, interval=0.01):
        threading.Thread.__init__(self, daemon=True)
        self.c, self.prefix, self.interval = c, prefix, interval
        self.stop_ev = threading.Event()
        self.cmids = []

    def run(self):
        while not self.stop_ev.is_set():
            cm = "%s-%03d" % (self.prefix, len(self.cmids))
            chat(self.c, "chat " + cm, cm)
            self.cmids.append(cm)
            time.sleep(self.interval)

    def finish(self):
        self.stop_ev.set()
        self.join(ANSWER_S)
        return list(self.cmids)


class RestWriter(threading.Thread):
    """POSTs messages "PREFIX N" to a session one after another until stopped, keeping
    every outcome: (content, status or None, body or exception text)."""

    def __init__(self, rest, sid, prefix, pause=0.05):
        threading.Thread.__init__(self, daemon=True)
        self.rest, self.sid, self.prefix, self.pause = rest, sid, prefix, pause
        self.stop_ev = threading.Event()
        self.results = []

    def run(self):
        n = 0
        while not self.stop_ev.is_set():
            content = "%s %d" % (self.prefix, n)
            n += 1
            try:
                r = self.rest.post("/sessions/%s/messages" % self.sid, {"content": content},
                                   timeout=ANSWER_S)
                self.results.append((content, r.status, r.body))
            except (OSError, http.client.HTTPException) as e:
                self.results.append((content, None, "%s: %s" % (type(e).__name__, e)))
            time.sleep(self.pause)

    def finish(self):
        self.stop_ev.set()
        self.join(ANSWER_S + 5)
        return self.results


def check_rest_writer(t, name, results, db, sid, allow_lost=False):
    """Every 201 is stored as answered; every other answer is 503 code unavailable with
    the JSON error body (or, with allow_lost, a connection cut by a kill)."""
    rows = stored(db, sid)
    ok = [(c, b) for c, st, b in results if st == 201]
    missing = [(c, b.get("id")) for c, b in ok if not isinstance(b, dict) or
               rows.get(c, (None,))[0] != b.get("id")]
    t.ok("%s: every REST 201 is stored, with the id it answered (%d of %d posts)" % (
        name, len(ok), len(results)), not missing and ok, "missing %r" % missing[:5])
    bad = [(c, st, b) for c, st, b in results if st != 201 and not (
        st == 503 and isinstance(b, dict) and isinstance(b.get("error"), dict) and
        b["error"].get("code") == "unavailable") and not (allow_lost and st is None)]
    t.ok("%s: every other REST answer is 503 unavailable with the JSON error body" % name,
         not bad, repr(bad[:3]))
    return len(ok), len(results) - len(ok)


# ---------------------------------------------------------------- (a) kill -9

def test_kill9_broker(t, cluster):
    db = cluster.create_database("t29_kill_broker")
    b = Broker(t, flags=dict(FLAGS, **{"--db": db}), name="broker-kill9", ready_timeout=30)
    a = connect(b, "A")
    c = connect(b, "B")
    sid = a.create_session()
    c.join(sid)
    a.chat("first, fully answered")
    a.read_reply(sid)
    c.read_reply(sid)
    long_text = " ".join("w%d" % i for i in range(200))
    for i in range(8):
        (a if i % 2 else c).send({"type": "chat", "message": "burst %d" % i})
    a.send({"type": "chat", "message": long_text})
    acked, acks = {}, []
    deadline = time.monotonic() + 30
    streaming_long = False
    while time.monotonic() < deadline and not streaming_long:
        f = a.expect(timeout=max(0.1, deadline - time.monotonic()),
                     type=one_of("session_update", "chunk", "response_complete"))
        if f.get("update_type") == "message_added":
            acked[f["message"]["id"]] = f["message"]["content"]
            acks.append(f["message"])
        elif f.get("type") == "response_complete":
            acked[f["message_id"]] = "(reply)"
        elif f.get("type") == "chunk" and f.get("text", "").startswith("w0 ") and \
                f.get("chunk_number") == 1:
            streaming_long = True
    t.ok("broker kill -9: the long reply was streaming", streaming_long, "acked %r" % acked)
    b.kill9()
    t.ok("broker kill -9: clients see the connection drop",
         a.wait_closed(5) is not None and c.wait_closed(5) is not None, "still open")
    code, lines = sql(db, "select id, role, content from messages where session_id = '%s' "
                      "order by seq;" % sid)
    rows = {int(ln.split("|", 2)[0]): ln.split("|", 2) for ln in lines}
    missing = [(i, x) for i, x in acked.items() if i not in rows or
               (x != "(reply)" and rows[i][2] != x)]
    t.ok("broker kill -9: every acknowledged message and reply is in the database",
         code == 0 and not missing and len(acked) >= 11,
         "missing %r (acked %d, stored %r)" % (missing, len(acked), lines))
    last_seen = max(acked) if acked else 0

    b.start()

    def replied():
        return len([ln for ln in sql(db, "select role, content from messages where "
                                     "session_id = '%s';" % sid)[1]
                    if ln == "assistant|" + long_text])
    t.eq("broker kill -9: the interrupted reply is produced after the restart",
         poll(replied, 1, 20), 1)
    t.eq("broker kill -9: every user message has exactly one reply in the end",
         poll(lambda: sql(db, "select role, count(*) from messages where session_id = '%s' "
                          "group by role order by role;" % sid)[1],
              ["assistant|10", "user|10"], 10), ["assistant|10", "user|10"])
    code, history = sql(db, "select id, role, content, seq from messages where "
                        "session_id = '%s' order by seq;" % sid)
    seq_of = {int(ln.split("|")[0]): int(ln.rsplit("|", 1)[1]) for ln in history}
    a2 = connect(b, "A2")
    j = a2.join(sid, since=last_seen)
    want = ["%s" % ln.rsplit("|", 1)[0] for ln in history
            if int(ln.rsplit("|", 1)[1]) > seq_of.get(last_seen, 0)]
    got = ["%d|%s|%s" % (m.get("id"), m.get("role"), m.get("content"))
           for m in j.get("messages") or []]
    t.eq("broker kill -9: rejoin with since gets exactly what came after, in seq order",
         got, want)
    t.eq("broker kill -9: message_count is the whole history", j.get("message_count"),
         len(history))
    check_seq(t, "broker kill -9", db, sid, acks)
    ack = a2.chat("after the crash")
    check_reply(t, "broker kill -9: the session works after the restart", a2.read_reply(sid),
                sid, "after the crash")
    t.ok("broker kill -9: ids keep increasing", ack["message"]["id"] > max(seq_of),
         repr(ack))
    a2.close()
    b.stop()


def test_kill9_rest(t, cluster):
    db = cluster.create_database("t29_kill_rest")
    rest = Rest(t, flags={"--db": db}, name="rest-kill9", ready_timeout=30)
    b = Broker(t, flags=dict(FLAGS, **{"--db": db}), tmpdir=rest.tmpdir, port=rest.ws_port,
               llm="none",
               name="broker-beside-rest", ready_timeout=30)
    sid = rest.new_session(title="kill -9 of REST")
    a = connect(b, "A")
    a.join(sid)
    writers = [RestWriter(rest, sid, "rest-%d" % i, pause=0.0) for i in range(2)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 20
    while sum(len(w.results) for w in writers) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    rest.kill9()
    results = [r for w in writers for r in w.finish()]
    n_ok, n_other = check_rest_writer(t, "REST kill -9", results, db, sid, allow_lost=True)
    t.diag("REST kill -9: %d posts answered 201, %d cut by the kill" % (n_ok, n_other))
    ack = a.chat("the broker serves while REST is down")
    t.ok("REST kill -9: the broker still serves", ack.get("session_id") == sid, repr(ack))
    rest.start()
    rows = stored(db, sid)
    d = rest.get("/sessions/%s?limit=1000" % sid).body
    t.eq("REST kill -9: after the restart REST shows every stored message",
         (d.get("message_count"), sorted(m.get("content") for m in d.get("messages") or [])),
         (len(rows), sorted(rows)))
    r = rest.post("/sessions/%s/messages" % sid, {"content": "after the REST crash"})
    t.eq("REST kill -9: POST after the restart: 201", r.status, 201)
    got = a.expect(timeout=10, type="session_update", update_type="message_added",
                   pred=lambda m: m["message"].get("content") == "after the REST crash")
    t.eq("REST kill -9: members see it live", got["message"].get("id"),
         r.body.get("id") if isinstance(r.body, dict) else None)
    check_seq(t, "REST kill -9", db, sid, [got["message"]])
    a.close()
    b.stop()
    rest.stop()


# ---------------------------------------------------------------- (b) the server stopped

def check_down_rest(t, rest, sid):
    for name, method, path, body in (
            ("POST message", "POST", "/sessions/%s/messages" % sid, {"content": "x"}),
            ("POST /sessions/new", "POST", "/sessions/new", {"title": "down"}),
            ("GET the session", "GET", "/sessions/%s" % sid, None),
            ("GET /sessions", "GET", "/sessions", None)):
        t0 = time.monotonic()
        r = rest.request(method, path, body=body, timeout=ANSWER_S)
        check_error(t, "server down: REST %s" % name, r, 503, "unavailable")
        t.diag("server down: REST %s answered in %.2f s" % (name, time.monotonic() - t0))
    r = rest.get("/health", timeout=ANSWER_S)
    body = r.body if isinstance(r.body, dict) else {}
    t.eq("server down: /health 503, status degraded, database not ok",
         (r.status, body.get("status"), body.get("database") != "ok"), (503, "degraded", True))


def test_stopped(t, cluster):
    db = cluster.create_database("t29_stopped")
    rest = Rest(t, flags={"--db": db}, name="rest-stopped", ready_timeout=30)
    b = Broker(t, flags=dict(FLAGS, **{"--db": db}), tmpdir=rest.tmpdir, port=rest.ws_port,
               llm="none",
               name="broker-stopped", ready_timeout=30)
    a = connect(b, "A")
    c = connect(b, "C")
    sid = a.create_session()
    c.join(sid)
    acks = []
    for i in range(3):
        acks.append(a.chat("before %d" % i, client_msg_id="before-%d" % i)["message"])
    writer = RestWriter(rest, sid, "rest-stopped")
    writer.start()

    # chats in flight when the server goes: each answered, acknowledged or unavailable
    sender = ChatSender(a, "burst")
    sender.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    cluster.stop("fast")
    t.diag("server down: pg_ctl stop -m fast took %.2f s" % (time.monotonic() - t0))
    time.sleep(0.3)
    burst = sender.finish()
    acked, refused, unanswered, stray = answers(a, burst, ANSWER_S)
    t.eq("server stopped mid-burst: every chat answered, acknowledged or error",
         (unanswered, stray), ([], []))
    t.eq("server stopped mid-burst: every error is code unavailable for the chat",
         sorted({(e.get("code"), e.get("request_type")) for e in refused.values()}),
         [("unavailable", "chat")] if refused else [])
    t.diag("server stopped mid-burst: %d acknowledged, %d unavailable" % (len(acked),
                                                                           len(refused)))
    acks += list(acked.values())

    # while it is down
    t.ok("server down: a ping is answered", a.ping_ok(timeout=ANSWER_S), "no pong")
    down = ["down-%d" % i for i in range(5)]
    for cm in down:
        chat(a, "chat " + cm, cm)
    d_acked, d_refused, d_unanswered, d_stray = answers(a, down, ANSWER_S)
    t.eq("server down: every chat is answered error unavailable (request_type chat, its "
         "client_msg_id)", (sorted(d_acked), d_unanswered, d_stray,
                            sorted((e.get("code"), e.get("request_type"), e.get("client_msg_id"))
                                   for e in d_refused.values())),
         ([], [], [], [("unavailable", "chat", cm) for cm in down]))
    e = a.request({"type": "create_session"}, timeout=ANSWER_S, type="error")
    t.eq("server down: create_session is answered error unavailable",
         (e.get("code"), e.get("request_type")), ("unavailable", "create_session"))
    t.ok("server down: the error messages are readable",
         all(isinstance(x.get("message"), str) and x["message"].strip()
             for x in list(d_refused.values()) + [e]), repr(e))
    t.eq("server down: the other member is told of no message",
         [m["message"].get("client_msg_id") for m in
          c.take_all(type="session_update", update_type="message_added")
          if m["message"].get("client_msg_id") in set(down)], [])
    check_down_rest(t, rest, sid)
    t.ok("server down: a ping is still answered", a.ping_ok(timeout=ANSWER_S), "no pong")
    time.sleep(1.0)  # let the REST writer see the server down for a while

    # the server comes back
    t0 = time.monotonic()
    cluster.start()
    t.diag("server back: pg_ctl start took %.2f s" % (time.monotonic() - t0))
    t0 = time.monotonic()
    r, took = rest_until(rest, "POST", "/sessions/%s/messages" % sid,
                         {"content": "REST after the restart"}, 201, RESUME_S)
    t.eq("server back: REST POST answers 201 again by itself", r and r.status, 201)
    t.diag("server back: REST serves again after %.2f s" % took)
    m, took, errs = until_acked(a, "chat after the restart", "after-0", RESUME_S)
    t.ok("server back: a chat is acknowledged again by itself", m is not None,
         "errors meanwhile %r" % errs[-3:])
    t.diag("server back: the broker stores again after %.2f s (%d refusals meanwhile)" % (
        time.monotonic() - t0, len(errs)))
    if m:
        acks.append(m)
    e = a.request({"type": "create_session"}, timeout=ANSWER_S,
                  type=one_of("session_created", "error"))
    t.eq("server back: create_session works", e.get("type"), "session_created")
    a.join(sid)
    r = rest.get("/health")
    t.eq("server back: /health 200, database ok",
         (r.status, r.body.get("database") if isinstance(r.body, dict) else None), (200, "ok"))
    time.sleep(0.5)
    rest_results = writer.finish()

    rows = stored(db, sid)
    missing = [(x.get("client_msg_id"), x.get("id")) for x in acks
               if rows.get(x.get("content"), (None,))[0] != x.get("id")]
    t.ok("server stopped: every acknowledged chat is in the database (%d)" % len(acks),
         not missing, "missing %r" % missing)
    t.eq("server stopped: no chat answered unavailable while it was down is stored",
         sorted(cm for cm in down if "chat " + cm in rows), [])
    in_doubt = sorted(cm for cm in refused if "chat " + cm in rows)
    t.diag("server stopped mid-burst: of the %d refused, stored anyway: %r" % (
        len(refused), in_doubt))
    n_ok, n_503 = check_rest_writer(t, "server stopped", rest_results, db, sid)
    t.diag("server stopped: the REST writer got %d x 201, %d x 503" % (n_ok, n_503))
    t.ok("server stopped: the REST writer saw it down (503s) and back (201s after)",
         n_503 > 0 and rest_results and rest_results[-1][1] == 201,
         "%d x 503, last %r" % (n_503, rest_results[-1:]))

    # the refused ones sent again with their client_msg_id: each stored exactly once
    again = sorted(refused) + down
    for cm in again:
        chat(a, "chat " + cm, cm)
    r_acked, r_refused, r_unanswered, _ = answers(a, again, ANSWER_S)
    t.eq("resend of every refused chat: all acknowledged", (sorted(r_refused), r_unanswered),
         ([], []))
    acks += list(r_acked.values())
    code, lines = sql(db, "select client_msg_id, count(*) from messages where session_id = "
                      "'%s' and client_msg_id is not null group by client_msg_id having "
                      "count(*) > 1;" % sid)
    t.eq("resend: every chat is stored once", (code, lines), (0, []))
    code, lines = sql(db, "select count(*) from messages where session_id = '%s' and "
                      "client_msg_id is not null;" % sid)
    t.eq("resend: every chat sent is stored now",
         lines, [str(len({x for x in ["before-%d" % i for i in range(3)] + burst + down +
                                  ["after-0"]}))])
    check_seq(t, "server stopped", db, sid, acks)
    t.eq("server stopped: no connection was closed", [x.name for x in (a, c) if x.closed], [])
    a.close()
    c.close()
    b.stop()
    rest.stop()


# ---------------------------------------------------------------- (c) immediate restart

def test_immediate(t, cluster):
    db = cluster.create_database("t29_immediate")
    rest = Rest(t, flags={"--db": db}, name="rest-immediate", ready_timeout=30)
    b = Broker(t, flags=dict(FLAGS, **{"--db": db}), tmpdir=rest.tmpdir, port=rest.ws_port,
               llm="none",
               name="broker-immediate", ready_timeout=30)
    a = connect(b, "A")
    c = connect(b, "C")
    sid = a.create_session()
    c.join(sid)
    acks = [a.chat("before", client_msg_id="before")["message"]]
    writer = RestWriter(rest, sid, "rest-immediate")
    writer.start()
    sender = ChatSender(a, "imm")  # before, during and right after the recovery
    sender.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    cluster.restart("immediate")
    t.diag("pg_ctl restart -m immediate took %.2f s" % (time.monotonic() - t0))
    time.sleep(0.5)
    everything = sender.finish()
    acked, refused, unanswered, stray = answers(a, everything, ANSWER_S)
    t.eq("immediate restart: every chat answered, acknowledged or error", (unanswered, stray),
         ([], []))
    t.eq("immediate restart: every error is code unavailable for the chat",
         sorted({(e.get("code"), e.get("request_type")) for e in refused.values()}),
         [("unavailable", "chat")] if refused else [])
    t.diag("immediate restart: %d acknowledged, %d unavailable" % (len(acked), len(refused)))
    acks += list(acked.values())
    t.ok("immediate restart: a ping is answered", a.ping_ok(timeout=ANSWER_S), "no pong")

    t0 = time.monotonic()
    r, took = rest_until(rest, "POST", "/sessions/%s/messages" % sid,
                         {"content": "REST after the crash"}, 201, RESUME_S)
    t.eq("immediate restart: REST POST answers 201 again by itself", r and r.status, 201)
    t.diag("immediate restart: REST serves again after %.2f s" % took)
    m, took, errs = until_acked(a, "chat after the crash", "after", RESUME_S)
    t.ok("immediate restart: a chat is acknowledged again by itself", m is not None,
         "errors meanwhile %r" % errs[-3:])
    if m:
        acks.append(m)
    time.sleep(0.5)
    rest_results = writer.finish()

    rows = stored(db, sid)
    missing = [(x.get("client_msg_id"), x.get("id")) for x in acks
               if rows.get(x.get("content"), (None,))[0] != x.get("id")]
    t.ok("immediate restart: every acknowledged chat survived the crash (%d)" % len(acks),
         not missing, "missing %r" % missing)
    in_doubt = sorted(cm for cm in refused if "chat " + cm in rows)
    t.diag("immediate restart: of the %d refused, stored anyway: %r" % (len(refused),
                                                                      in_doubt))
    n_ok, n_503 = check_rest_writer(t, "immediate restart", rest_results, db, sid)
    t.diag("immediate restart: the REST writer got %d x 201, %d x 503" % (n_ok, n_503))
    again = sorted(refused)
    for cm in again:
        chat(a, "chat " + cm, cm)
    r_acked, r_refused, r_unanswered, _ = answers(a, again, ANSWER_S)
    t.eq("resend of every refused chat: all acknowledged", (sorted(r_refused), r_unanswered),
         ([], []))
    acks += list(r_acked.values())
    code, lines = sql(db, "select count(*), count(distinct client_msg_id) from messages "
                      "where session_id = '%s' and client_msg_id is not null;" % sid)
    n = len(everything) + 2
    t.eq("immediate restart: after the resend every chat is stored exactly once",
         (code, lines), (0, ["%d|%d" % (n, n)]))
    check_seq(t, "immediate restart", db, sid, acks)
    t.eq("immediate restart: no connection was closed", [x.name for x in (a, c) if x.closed],
         [])
    a.close()
    c.close()
    b.stop()
    rest.stop()


def main(t):
    if not parley.PG:
        t.skip("PostgreSQL restarts", "a PostgreSQL pass only (tests/run.py --pass pg=bin)")
        return
    if parley.db_shell_missing(t):
        return
    cluster = pgcluster.Cluster(prefix="parley-pg-29-")
    # the runner's SIGTERM (a timeout) must not leave the cluster running: pg_ctl starts
    # it in a session of its own, out of reach of the signal to this file's group
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        cluster.start()
    except Exception as e:  # noqa: BLE001
        t.fail("a cluster of its own starts", "%s: %s" % (type(e).__name__, e))
        return
    try:
        for name, fn in (("kill -9 of the broker", test_kill9_broker),
                         ("kill -9 of REST", test_kill9_rest),
                         ("server stopped during chat", test_stopped),
                         ("pg_ctl restart -m immediate", test_immediate)):
            with t.section(name):
                if not cluster.running():
                    cluster.start()
                fn(t, cluster)
            parley.close_clients()
            for p in parley._procs:
                if p.alive():
                    p.stop(check=False)
    finally:
        if t.failed:
            t.diag("--- last lines of the PostgreSQL server log ---")
            t.diag(cluster.log_tail(40))
        parley.close_clients()
        for p in parley._procs:  # the processes first, then the cluster under them
            if p.alive():
                p.stop(check=False)
        cluster.destroy()


parley.run(main)
