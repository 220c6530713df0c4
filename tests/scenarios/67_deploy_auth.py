"""API keys through each web server of deploy/ (nginx, lighttpd, Apache httpd): a key made
with the real `parley-rest keys add` on the deployment's database before it starts, then
through the proxy: REST without a key is 401 unauthorized with WWW-Authenticate: Bearer,
with `Authorization: Bearer KEY` it is served (so the server passes Authorization on to
parley-fcgi), the public paths stay open; WebSocket upgrades with ?api_key=KEY or an
Authorization: Bearer header connect (auth_required true) and chat with the echo reply,
a wrong key is refused with HTTP 401, no key gets auth_required then unauthorized."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402
from parley import make_tmpdir  # noqa: E402

WRONG = "pk_" + "0" * 40


def refusal(url, headers=None):
    """The HTTP status python3-websockets reports for an upgrade (101 when it connects),
    or the exception when it could not read one."""
    import websockets
    try:
        c = parley.WsClient(url, name="probe", headers=headers, timeout=5)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)
    c.close()
    return 101


def connected(t, name, url, headers=None):
    c = parley.WsClient(url, name=name, headers=headers)
    hello = c.expect(type="connected")
    t.eq("%s: connected, server_info.auth_required true" % name,
         hello.get("server_info", {}).get("auth_required"), True)
    return c


def rest_checks(t, name, front, key, files):
    bearer = {"Authorization": "Bearer %s" % key}
    r = front.get("/sessions")
    parley.check_error(t, "%s: GET /sessions without a key" % name, r, 401, "unauthorized")
    t.eq("%s: 401 WWW-Authenticate" % name, r.headers.get("www-authenticate"), "Bearer")
    r = front.get("/sessions", headers={"Authorization": "Bearer %s" % WRONG})
    parley.check_error(t, "%s: GET /sessions with a wrong key" % name, r, 401, "unauthorized")
    t.eq("%s: wrong key: WWW-Authenticate" % name, r.headers.get("www-authenticate"), "Bearer")
    r = front.post("/sessions/new", {"title": "keyed via %s" % name}, headers=bearer)
    t.eq("%s: POST /sessions/new with the key: 201" % name, r.status, 201)
    sid = r.body.get("session_id") if isinstance(r.body, dict) else None
    r = front.get("/sessions", headers=bearer)
    t.eq("%s: GET /sessions with the key: 200" % name, r.status, 200)
    t.eq("%s: GET /sessions with the key lists the session" % name,
         [s.get("session_id") for s in r.body.get("sessions", [])]
         if isinstance(r.body, dict) else r.body, [sid])
    r = front.get("/health")
    t.eq("%s: GET /health without a key: 200, database ok" % name,
         (r.status, r.body.get("database") if isinstance(r.body, dict) else r.body),
         (200, "ok"))
    r = front.get("/")
    t.eq("%s: GET / without a key: 200, name parley" % name,
         (r.status, r.body.get("name") if isinstance(r.body, dict) else r.body),
         (200, "parley"))
    r = front.get("/demo", decode=False)
    t.eq("%s: /demo without a key" % name, (r.status, r.body), (200, files["demo.html"]))


def ws_checks(t, name, public, key):
    # ?api_key=KEY: a makes a session and chats; b (Authorization: Bearer) joins and chats.
    a = connected(t, "%s ws ?api_key" % name, public + "?api_key=" + key)
    b = connected(t, "%s ws Bearer header" % name, public,
                  headers={"Authorization": "Bearer %s" % key})
    sid = a.create_session(title="keyed chat")
    b.join(sid)
    text = "hello through the proxy with a key"
    ack = a.chat(text)
    t.eq("%s ws ?api_key: message_added" % name, ack["message"]["content"], text)
    seen = b.expect(type="session_update", update_type="message_added")
    t.eq("%s ws Bearer header: sees the message" % name, seen["message"]["content"], text)
    parley.check_reply(t, "%s ws ?api_key: echo reply" % name, a.read_reply(sid), sid, text=text)
    parley.check_reply(t, "%s ws Bearer header: echo reply" % name, b.read_reply(sid), sid,
                       text=text)
    text2 = "and back from the header client"
    ack = b.chat(text2)
    t.eq("%s ws Bearer header: its own chat is added" % name, ack["message"]["content"], text2)
    parley.check_reply(t, "%s ws Bearer header: echo reply to its chat" % name,
                       b.read_reply(sid), sid, text=text2)
    a.close()
    b.close()
    # a wrong key is refused before the upgrade, in the query and in the header
    t.eq("%s ws ?api_key=wrong: HTTP 401" % name, refusal(public + "?api_key=" + WRONG), 401)
    t.eq("%s ws Bearer wrong: HTTP 401" % name,
         refusal(public, headers={"Authorization": "Bearer %s" % WRONG}), 401)
    # no key: connected with auth_required, then anything but auth -> unauthorized + 1008
    n = connected(t, "%s ws no key" % name, public)
    n.send({"type": "create_session"})
    err = n.expect(type="error")
    t.eq("%s ws no key: create_session -> error unauthorized" % name,
         (err.get("code"), err.get("request_type")), ("unauthorized", "create_session"))
    t.eq("%s ws no key: closed 1008" % name, n.wait_closed(5), 1008)


def one(t, kind):
    tmp = make_tmpdir()
    www, files = deploy.make_www(tmp)
    with t.section("%s: keys add" % kind):
        key = deploy.add_api_key(t, parley.db_for(tmp), "proxytest")
    procs = []
    try:
        broker, fcgi, web, front, public = deploy.start_proxied(t, kind, tmp, www)
        procs = [web, fcgi, broker]
        with t.section("%s: REST" % kind):
            rest_checks(t, kind, front, key, files)
        with t.section("%s: WebSocket" % kind):
            ws_checks(t, kind, public, key)
    finally:
        parley.close_clients()
        for p in procs:
            p.stop()


def main(t):
    for kind in ("nginx", "lighttpd", "apache"):
        with t.section("%s: deployment" % kind):
            one(t, kind)


parley.run(main)
