"""TLS without a proxy: a self-signed certificate made with openssl for the test;
parley-broker serving wss:// and parley-rest serving https:// with --tls-cert/--tls-key,
both verified against that certificate; a chat over wss://; plain clients refused."""

import http.client
import os
import socket
import ssl
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import parley  # noqa: E402
from parley import make_tmpdir, run_cli  # noqa: E402


def main(t):
    tmp = make_tmpdir()
    cert, key, ctx = deploy.self_signed_cert(tmp)
    broker = deploy.TlsBroker(t, ctx, cert, key, tmpdir=tmp)
    rest = deploy.TlsRest(t, ctx, cert, key, tmpdir=tmp, ws_port=broker.port)

    with t.section("https REST"):
        r = rest.get("/")
        t.eq("https GET /: 200", r.status, 200)
        t.eq("https GET /: ws_url is wss:// on the broker's port",
             r.body.get("ws_url") if isinstance(r.body, dict) else r.body,
             "wss://127.0.0.1:%d/ws" % broker.port)
        r = rest.post("/sessions/new", {"title": "over https"})
        t.eq("https POST /sessions/new: 201", r.status, 201)
        sid = r.body.get("session_id") if isinstance(r.body, dict) else None
        r = rest.get("/sessions/%s" % sid)
        t.eq("https GET /sessions/{id}: title",
             (r.status, r.body.get("title") if isinstance(r.body, dict) else r.body),
             (200, "over https"))
        parley.check_error(t, "https unknown route", rest.get("/nope"), 404, "not_found")
        # a client that does not trust the certificate is refused by its own check
        other = ssl.create_default_context()
        conn = http.client.HTTPSConnection("127.0.0.1", rest.port, timeout=5, context=other)
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
            t.fail("https: an untrusted certificate fails verification", "request succeeded")
        except ssl.SSLCertVerificationError:
            t.ok("https: an untrusted certificate fails verification", True)
        finally:
            conn.close()
        # plain HTTP on the HTTPS port gets no HTTP answer
        conn = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=5)
        try:
            conn.request("GET", "/health")
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            status = None
        finally:
            conn.close()
        t.eq("https: plain HTTP is not served", status, None)

    with t.section("wss chat"):
        a = broker.client(name="a")
        b = broker.client(name="b")
        t.eq("wss: connected", a.expect(type="connected")["type"], "connected")
        b.expect(type="connected")
        sid = a.create_session(title="over wss")
        b.join(sid)
        text = "hello over wss"
        ack = a.chat(text)
        t.eq("wss: message_added to the sender", ack["message"]["content"], text)
        seen = b.expect(type="session_update", update_type="message_added")
        t.eq("wss: message_added to the other", seen["message"]["content"], text)
        parley.check_reply(t, "wss: reply", b.read_reply(sid), sid, text=text)
        a.close()
        b.close()
        # a plain ws:// upgrade on the wss port fails
        try:
            sock, _ = parley.ws_handshake(broker.port, timeout=3)
            sock.close()
            t.fail("wss: a plain ws:// upgrade is refused", "upgrade succeeded")
        except (OSError, ValueError, socket.timeout):
            t.ok("wss: a plain ws:// upgrade is refused", True)

    with t.section("bad TLS flags"):
        code, _, err = run_cli("parley-rest", ["--port", "0", "--db",
                                               parley.db_for(tmp, "x.db"),
                                               "--notify-socket", os.path.join(tmp, "n.sock"),
                                               "--tls-cert", cert])
        t.eq("parley-rest --tls-cert without --tls-key exits 2", code, 2)
        t.match("... and says they go together", err, r"--tls-cert and --tls-key")
        code, _, err = run_cli("parley-rest", ["--port", "0", "--db",
                                               parley.db_for(tmp, "x.db"),
                                               "--notify-socket", os.path.join(tmp, "n.sock"),
                                               "--tls-cert", os.path.join(tmp, "missing.pem"),
                                               "--tls-key", key])
        t.eq("parley-rest with a missing certificate exits 1", code, 1)
        t.match("... and names the file", err, r"missing\.pem")

    rest.stop()
    broker.stop()


parley.run(main)
