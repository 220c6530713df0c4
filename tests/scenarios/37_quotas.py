"""Quotas per API key (SPEC 9): --quota-messages-per-day counted per key and UTC day in the
database, shared by REST and the broker, kept over a restart, each key on its own; a chat
or a REST post over it is refused (error quota_exceeded / 429) with the exact resets_at
(the next UTC midnight) and a message saying when, and nothing is stored; a resend of a
stored client_msg_id is not counted twice; --quota-tokens-per-day with the fake OpenAI
server's usage figures (prompt + completion); the day boundary with the clock moved by
PARLEY_TEST_CLOCK_OFFSET_S to just before a UTC midnight; `keys list` showing today's use;
no API key, no quota."""

import calendar
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import TS_RE, Broker, Rest, run_cli  # noqa: E402
from llm_fake import FakeLLM, Script  # noqa: E402
from llm_support import llm_broker  # noqa: E402
import schema_check  # noqa: E402

WS_FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}
HEADER = ["NAME", "CREATED", "MESSAGES_TODAY", "TOKENS_TODAY", "STATUS"]
MESSAGE_RE = (r"resets at (\d{4}-\d\d-\d\dT00:00:00)Z, in (\d+ h \d+ min|\d+ min|\d+ s)$")


def next_midnight(ts):
    """The UTC midnight after unix time ts, as unix seconds."""
    day = time.gmtime(ts)
    return calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400


def iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def keys(r, *args, env=None):
    return run_cli("parley-rest", ["--db", r.db, "--notify-socket", r.notify_socket] +
                   [x for k, v in QUOTA_FLAGS.get(r, {}).items() for x in (k, v)] +
                   ["keys"] + list(args), env=env)


QUOTA_FLAGS = {}  # Rest -> the quota flags it runs with (keys list shows the same)


def add_key(t, r, name):
    code, out, err = keys(r, "add", name)
    t.eq("keys add %s: exit 0" % name, code, 0)
    return out.strip()


def keys_rows(t, r, name, env=None):
    """keys list as rows of words, the CREATED column checked and dropped."""
    code, out, err = keys(r, "list", env=env)
    t.eq("%s: keys list exit 0" % name, code, 0)
    rows = [line.split() for line in out.splitlines()]
    t.eq("%s: keys list header" % name, rows[:1], [HEADER])
    for row in rows[1:]:
        t.ok("%s: keys list %s: CREATED is a timestamp" % (name, row[0]),
             len(row) >= 5 and re.match(TS_RE, row[1]), repr(row))
    return [row[:1] + row[2:] for row in rows[1:]]


def connect(b, key, name):
    c = parley.WsClient(b.url + "?api_key=" + key, name=name)
    c.expect(type="connected")
    return c


def auth(key):
    return {"Authorization": "Bearer " + key}


FLAT_SERVER = schema_check.load("flat-server.json")
ENVELOPE_SERVER = schema_check.load("envelope-server.json")


def check_refusal(t, name, ev, midnight, request_type="chat", client_msg_id=None):
    """An error frame refusing a chat over quota: code, resets_at, message, fields."""
    t.eq("%s: valid against schema/ws/flat-server.json" % name,
         schema_check.validate(ev, FLAT_SERVER), [])
    t.eq("%s: error code quota_exceeded" % name, ev.get("code"), "quota_exceeded")
    t.eq("%s: resets_at is the next UTC midnight" % name, ev.get("resets_at"), iso(midnight))
    t.eq("%s: request_type" % name, ev.get("request_type"), request_type)
    t.eq("%s: client_msg_id" % name, ev.get("client_msg_id"), client_msg_id)
    m = re.search(MESSAGE_RE, ev.get("message") or "")
    t.ok("%s: the message says when it resets" % name,
         m and m.group(1) == iso(midnight)[:19], repr(ev.get("message")))


def check_rest_refusal(t, name, resp, midnight):
    err = (resp.body or {}).get("error", {}) if isinstance(resp.body, dict) else {}
    t.eq("%s: 429" % name, resp.status, 429)
    t.eq("%s: error.code quota_exceeded" % name, err.get("code"), "quota_exceeded")
    t.eq("%s: error.resets_at is the next UTC midnight" % name, err.get("resets_at"),
         iso(midnight))
    t.eq("%s: error body fields" % name, sorted(err), ["code", "message", "resets_at"])
    m = re.search(MESSAGE_RE, err.get("message") or "")
    t.ok("%s: the message says when it resets" % name,
         m and m.group(1) == iso(midnight)[:19], repr(err.get("message")))


def user_contents(r, key, sid):
    resp = r.get("/sessions/%s" % sid, headers=auth(key))
    return [m["content"] for m in resp.body.get("messages", []) if m.get("role") == "user"]


def start_pair(t, tmpdir=None, quota=None, env=None, llm="echo", fake=None):
    """REST and a broker on one database with the same quota flags."""
    flags = dict(quota or {})
    r = Rest(t, flags=flags, env=env, tmpdir=tmpdir)
    QUOTA_FLAGS[r] = flags
    return r, flags


def start_broker(t, r, flags, env=None, llm="echo"):
    f = dict(WS_FLAGS)
    f.update(flags)
    return Broker(t, flags=f, env=env, tmpdir=r.tmpdir, port=r.ws_port, llm=llm)


def test_messages(t):
    """Message quota of 3: shared by REST and the broker, per key, kept over a restart."""
    quota = {"--quota-messages-per-day": "3"}
    r, flags = start_pair(t, quota=quota)
    alice = add_key(t, r, "alice")
    bob = add_key(t, r, "bob")
    t.eq("a fresh key: nothing used today",
         keys_rows(t, r, "fresh"), [["alice", "0/3", "0", "valid"], ["bob", "0/3", "0", "valid"]])
    b = start_broker(t, r, flags)
    resp = r.post("/sessions/new", {"title": "quota"}, headers=auth(alice))
    sid = resp.body["session_id"]
    for i in (1, 2):
        resp = r.post("/sessions/%s/messages" % sid, {"content": "rest %d" % i},
                      headers=auth(alice))
        t.eq("alice's REST message %d: 201" % i, resp.status, 201)
    ca = connect(b, alice, "alice")
    ca.join(sid)
    ca.chat("ws 3")
    ca.read_reply(sid)
    t.eq("after 2 REST + 1 WebSocket messages",
         keys_rows(t, r, "three used"),
         [["alice", "3/3", "0", "valid"], ["bob", "0/3", "0", "valid"]])

    midnight = next_midnight(time.time())
    ca.send({"type": "chat", "message": "ws 4", "client_msg_id": "four"})
    ev = ca.expect(type="error", timeout=10)
    check_refusal(t, "the 4th on the broker", ev, midnight, client_msg_id="four")
    t.eq("the refused chat gets no reply and no message_added",
         ca.quiet(0.8, pred=lambda m: m.get("type") in ("status", "response_start") or
                  m.get("update_type") == "message_added"), [])
    resp = r.post("/sessions/%s/messages" % sid, {"content": "rest 4"}, headers=auth(alice))
    check_rest_refusal(t, "the 4th on REST", resp, midnight)
    t.eq("nothing stored for the refused ones", user_contents(r, alice, sid),
         ["rest 1", "rest 2", "ws 3"])
    ce = parley.WsClient(b.url + "?dialect=envelope&api_key=" + alice, name="alice envelope")
    ce.expect(type="connected")
    ce.request({"type": "subscribe", "timestamp": "2026-01-20T12:34:56.789Z", "client_id": "al",
                "channel": None, "data": {"channel": "quota-room"}}, type="subscription_success")
    ce.send({"type": "chat_message", "timestamp": "2026-01-20T12:34:56.789Z", "client_id": "al",
             "channel": "quota-room", "data": {"content": "envelope 4"}})
    ev = ce.expect(type="error", timeout=10)
    t.eq("envelope chat_message over quota: valid against envelope-server.json",
         schema_check.validate(ev, ENVELOPE_SERVER), [])
    data = ev.get("data") or {}
    t.eq("envelope chat_message over quota: data.code", data.get("code"), "quota_exceeded")
    t.eq("envelope chat_message over quota: data.resets_at", data.get("resets_at"),
         iso(midnight))
    ce.close()

    # bob counts apart; a resend of a stored client_msg_id is not counted twice
    cb = connect(b, bob, "bob")
    cb.join(sid)
    ca.clear()
    resp = r.post("/sessions/%s/messages" % sid, {"content": "bob rest"}, headers=auth(bob))
    t.eq("bob's REST message: 201 while alice is over quota", resp.status, 201)
    cb.chat("bob ws", client_msg_id="b1")
    cb.read_reply(sid)
    cb.clear()
    cb.send({"type": "chat", "message": "bob ws", "client_msg_id": "b1"})
    ev = cb.expect(type="session_update", update_type="message_added", timeout=10,
                   pred=lambda m: (m.get("message") or {}).get("content") == "bob ws")
    t.eq("bob's resend is acknowledged as the stored message",
         (ev.get("message") or {}).get("client_msg_id"), "b1")
    t.eq("two keys counted apart; the resend not counted",
         keys_rows(t, r, "two keys"),
         [["alice", "3/3", "0", "valid"], ["bob", "2/3", "0", "valid"]])
    ca.close()
    cb.close()

    # a restart of both keeps the count
    b.stop()
    r.stop()
    r.start()
    b.start()
    ca = connect(b, alice, "alice again")
    ca.join(sid)
    ca.send({"type": "chat", "message": "after restart"})
    ev = ca.expect(type="error", timeout=10)
    check_refusal(t, "after a restart, alice's chat", ev, midnight)
    resp = r.post("/sessions/%s/messages" % sid, {"content": "after restart"},
                  headers=auth(alice))
    check_rest_refusal(t, "after a restart, alice's REST post", resp, midnight)
    cb = connect(b, bob, "bob again")
    cb.join(sid)
    cb.chat("bob third")
    cb.read_reply(sid)
    cb.send({"type": "chat", "message": "bob fourth"})
    ev = cb.expect(type="error", timeout=10)
    check_refusal(t, "bob's 4th after the restart", ev, midnight)
    t.eq("after the restart", keys_rows(t, r, "restart"),
         [["alice", "3/3", "0", "valid"], ["bob", "3/3", "0", "valid"]])
    code, out, err = keys(r, "revoke", "bob")
    t.eq("a revoked key still shows its use", keys_rows(t, r, "revoked")[1][:3],
         ["bob", "3/3", "0"])
    ca.close()
    cb.close()
    b.stop()
    r.stop()


def test_no_keys(t):
    """Without API keys there is no key, so no quota applies."""
    r, flags = start_pair(t, quota={"--quota-messages-per-day": "1"})
    b = start_broker(t, r, flags)
    sid = r.new_session()
    for i in (1, 2):
        resp = r.post("/sessions/%s/messages" % sid, {"content": "free %d" % i})
        t.eq("no keys: REST message %d: 201 over a quota of 1" % i, resp.status, 201)
    c = b.client("guest")
    c.expect(type="connected")
    c.join(sid)
    c.chat("free 3")
    c.read_reply(sid)
    c.chat("free 4")
    t.ok("no keys: chats over a quota of 1 are stored", True)
    t.eq("no keys: keys list shows only the header", keys_rows(t, r, "no keys"), [])
    c.close()
    b.stop()
    r.stop()


def test_tokens(t, fake):
    """Token quota of 30 with the fake OpenAI server's usage figures."""
    quota = {"--quota-tokens-per-day": "30"}
    r, flags = start_pair(t, quota=quota)
    carol = add_key(t, r, "carol")
    f = dict(WS_FLAGS)
    f.update(flags)
    b = llm_broker(t, "openai", fake.url_openai, tmpdir=r.tmpdir, port=r.ws_port,
                   llm_model="fake-model", **{k[2:].replace("-", "_"): v for k, v in f.items()})
    c = connect(b, carol, "carol")
    sid = c.create_session()
    fake.play(Script(["Seventeen", " and nine"], usage=(17, 9)))
    c.chat("first")
    c.read_reply(sid)
    t.eq("26 tokens used: under the quota", keys_rows(t, r, "26 tokens"),
         [["carol", "1", "26/30", "valid"]])
    fake.play(Script(["Five", " and six"], usage=(5, 6), usage_style="final"))
    c.chat("second")
    c.read_reply(sid)
    t.eq("26 + 11 tokens", keys_rows(t, r, "37 tokens"), [["carol", "2", "37/30", "valid"]])
    n = fake.count()
    midnight = next_midnight(time.time())
    c.send({"type": "chat", "message": "third"})
    ev = c.expect(type="error", timeout=10)
    check_refusal(t, "a chat over the token quota", ev, midnight)
    t.ok("the message names the tokens used and the quota",
         "37 of its 30" in (ev.get("message") or ""), repr(ev.get("message")))
    resp = r.post("/sessions/%s/messages" % sid, {"content": "third"}, headers=auth(carol))
    check_rest_refusal(t, "a REST post over the token quota", resp, midnight)
    time.sleep(0.5)
    t.eq("the refused chats never reached the LLM", fake.count(), n)
    t.eq("nothing stored for them", user_contents(r, carol, sid), ["first", "second"])
    t.eq("refusals do not count", keys_rows(t, r, "refused"), [["carol", "2", "37/30", "valid"]])
    c.close()
    b.stop()
    r.stop()


def test_day_boundary(t):
    """The clock 10 s before a UTC midnight: the quota is reached, resets_at is that
    midnight, and after it the chat passes again."""
    lead = 10
    now = time.time()
    midnight = next_midnight(now)
    offset = int(midnight - lead - now)  # the processes' clock: `lead` s before midnight
    env = {"PARLEY_TEST_CLOCK_OFFSET_S": str(offset)}
    real_midnight = midnight - offset  # when their clock passes midnight, in real time
    r, flags = start_pair(t, quota={"--quota-messages-per-day": "1"}, env=env)
    dave = add_key(t, r, "dave")
    b = start_broker(t, r, flags, env=env)
    c = connect(b, dave, "dave")
    sid = c.create_session()
    c.chat("before midnight")
    c.read_reply(sid)
    c.send({"type": "chat", "message": "still before"})
    ev = c.expect(type="error", timeout=10)
    before = time.time() < real_midnight
    t.ok("the refusal came before the processes' midnight (setup took %.1f s of %d)" %
         (time.time() - now, lead), before, "too slow")
    check_refusal(t, "before midnight", ev, midnight)
    m = re.search(MESSAGE_RE, ev.get("message") or "")
    t.ok("before midnight: it resets in seconds", m and m.group(2).endswith(" s"),
         repr(ev.get("message")))
    t.eq("before midnight: keys list", keys_rows(t, r, "before midnight", env=env),
         [["dave", "1/1", "0", "valid"]])
    time.sleep(max(0.0, real_midnight - time.time()) + 1.5)
    c.chat("after midnight", timeout=10)
    c.read_reply(sid)
    t.ok("after midnight: the chat passes again", True)
    c.send({"type": "chat", "message": "second after"})
    ev = c.expect(type="error", timeout=10)
    check_refusal(t, "after midnight, the next day's quota", ev, midnight + 86400)
    t.eq("after midnight: keys list shows the new day", keys_rows(t, r, "after", env=env),
         [["dave", "1/1", "0", "valid"]])
    t.eq("both days stored", user_contents(r, dave, sid), ["before midnight", "after midnight"])
    c.close()
    b.stop()
    r.stop()


def main(t):
    with t.section("messages"):
        test_messages(t)
    with t.section("no keys"):
        test_no_keys(t)
    fake = FakeLLM()
    with t.section("tokens"):
        test_tokens(t, fake)
    fake.close()
    with t.section("day boundary"):
        test_day_boundary(t)


if __name__ == "__main__":
    parley.run(main)
