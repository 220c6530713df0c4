"""Helpers for the deploy scenarios (tests/scenarios/6*_deploy_*.py).

parley-fcgi as a child process (on a Unix socket, a TCP port, or under spawn-fcgi), a
minimal FastCGI client that plays the web server, the templates of deploy/ rendered
with sed, nginx, lighttpd and Apache httpd run as children of the test on a free
loopback port with every path (pid, logs, temp files) in the test's temp dir, HTTP(S)
requests through them, and a self-signed certificate. Processes are stopped by pid
only. Standard library only, under /usr/bin/python3.
"""

import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import parley
from parley import BIN_DIR, ROOT, Broker, Response, Rest, free_port, make_tmpdir

DEPLOY = os.path.join(ROOT, "deploy")


# ---------------------------------------------------------------- FastCGI client

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT, FCGI_STDERR = \
    1, 3, 4, 5, 6, 7


def _fcgi_record(rtype, content, rid=1):
    pad = (8 - len(content) % 8) % 8
    return struct.pack("!BBHHBx", 1, rtype, rid, len(content), pad) + content + b"\0" * pad


def _fcgi_len(n):
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def _fcgi_stream(rtype, data):
    out = b""
    for i in range(0, len(data), 32768):
        out += _fcgi_record(rtype, data[i:i + 32768])
    return out + _fcgi_record(rtype, b"")


def parse_cgi_response(raw):
    """A CGI response (headers, blank line, body) as (status, lowercased headers, body
    bytes). Without a Status header the status is 200."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers in %r" % raw[:300])
    headers = {}
    status = 200
    for line in head.decode("latin-1").split("\r\n"):
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip()
        if k == "status":
            status = int(v.split()[0])
            headers["status"] = v
        else:
            headers[k] = v if k not in headers else headers[k] + ", " + v
    return status, headers, body


def fcgi_request(addr, params, body=b"", timeout=10):
    """One FastCGI responder request to addr (a Unix path, or (host, port)), as a web
    server sends it. Returns (status, lowercased headers, body bytes, stderr bytes)."""
    if isinstance(addr, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(addr)
    else:
        sock = socket.create_connection(addr, timeout=timeout)
    try:
        pairs = b""
        for k, v in params.items():
            k, v = k.encode(), str(v).encode()
            pairs += _fcgi_len(len(k)) + _fcgi_len(len(v)) + k + v
        sock.sendall(_fcgi_record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 1, 0)) +
                     _fcgi_stream(FCGI_PARAMS, pairs) + _fcgi_stream(FCGI_STDIN, body))
        buf, out, err = b"", b"", b""
        while True:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack("!H", buf[4:6])[0] + buf[6]:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ValueError("connection closed before FCGI_END_REQUEST (%r)" % out[:200])
                buf += chunk
            _, rtype, _, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rtype == FCGI_STDOUT:
                out += content
            elif rtype == FCGI_STDERR:
                err += content
            elif rtype == FCGI_END_REQUEST:
                break
        status, headers, payload = parse_cgi_response(out)
        return status, headers, payload, err
    finally:
        sock.close()


# ---------------------------------------------------------------- processes

class Fcgi(Rest):
    """bin/parley-fcgi with a temporary database, listening on a Unix socket in tmpdir
    (or tcp=True: a free loopback port; spawn=True: under spawn-fcgi, which hands it the
    Unix socket as fd 0). request() plays a web server mounted at / with the FastCGI
    client, so a Fcgi can stand wherever the scenarios use a Rest."""

    def __init__(self, t, flags=None, env=None, tmpdir=None, ws_port=None, tcp=False,
                 spawn=False, name="parley-fcgi", start=True, ready_timeout=10.0):
        self.t = t
        self.name = name
        self.tmpdir = tmpdir or make_tmpdir()
        self.db = parley.given_db(flags, self.tmpdir)  # a file path or a PostgreSQL URI
        self.notify_socket = os.path.join(self.tmpdir, "broker.sock")
        self.ws_port = ws_port or free_port()
        self.spawn = spawn
        if tcp:
            self.port = free_port()
            self.addr = ("127.0.0.1", self.port)
            self.socket_spec = "127.0.0.1:%d" % self.port
        else:
            self.port = 0
            self.addr = self.socket_spec = os.path.join(self.tmpdir, "fcgi.sock")
        self.flags = {
            "--db": self.db,
            "--notify-socket": self.notify_socket,
            "--log-level": "debug",
            "--ws-port": str(self.ws_port),
            "--fcgi-socket": None if spawn else self.socket_spec,
            "--fcgi-socket-mode": None if spawn else "0666",
        }
        self.flags.update(flags or {})
        self.env = env or {}
        self.argv_extra = []
        self.popen = None
        self.returncode = None
        self.log_path = None
        self.ready_timeout = ready_timeout
        if start:
            self.start()

    def argv(self):
        argv = Rest.argv(self)
        argv[0] = os.path.join(BIN_DIR, "parley-fcgi")
        if self.spawn:
            # -n: no fork, spawn-fcgi execs parley-fcgi itself (so the pid is its pid)
            argv = ["/usr/bin/spawn-fcgi", "-n", "-s", self.socket_spec, "-M", "0666",
                    "--"] + argv
        return argv

    def probe(self):
        fcgi_request(self.addr, {"REQUEST_METHOD": "GET", "REQUEST_URI": "/health"}, timeout=2)

    def params(self, method, path, body=b"", headers=None, script_name=None, path_info=None,
               request_uri=None):
        """The CGI variables a web server sends for METHOD path (path with its query)."""
        query = path.partition("?")[2]
        p = {"REQUEST_METHOD": method, "REQUEST_URI": request_uri or path,
             "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1",
             "HTTP_HOST": "127.0.0.1:%d" % (self.port or 80), "CONTENT_LENGTH": len(body),
             "SCRIPT_NAME": path.partition("?")[0] if script_name is None else script_name}
        if path_info is not None:
            p["PATH_INFO"] = path_info
        for k, v in (headers or {}).items():
            if v is None:
                continue
            if k.lower() == "content-type":
                p["CONTENT_TYPE"] = v
            else:
                p["HTTP_" + k.upper().replace("-", "_")] = v
        return p

    def request(self, method, path, body=None, headers=None, raw=None, timeout=10, host=None,
                decode=True, **cgi):
        hdrs = {}
        data = b""
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        for k, v in (headers or {}).items():
            for existing in [x for x in hdrs if x.lower() == k.lower()]:
                del hdrs[existing]
            hdrs[k] = v
        params = self.params(method, path, data, hdrs, **cgi)
        if method == "GET" and not data:
            params.pop("CONTENT_LENGTH")
        status, h, payload, _ = fcgi_request(self.addr, params, data, timeout=timeout)
        return Response((status, h, parley._decode_body(h, payload) if decode else payload))

def render(template, out_path, **values):
    """deploy/TEMPLATE with each @KEY@ replaced by sed, written to out_path. Raises when a
    placeholder is left. Returns the text."""
    argv = ["sed"]
    for k, v in values.items():
        argv += ["-e", "s|@%s@|%s|g" % (k, v)]
    argv.append(os.path.join(DEPLOY, template))
    text = subprocess.run(argv, check=True, stdout=subprocess.PIPE).stdout.decode()
    import re
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise RuntimeError("%s: placeholders left after rendering: %s" % (template, left))
    with open(out_path, "w") as f:
        f.write(text)
    return text


class WebServer(Rest):
    """A web server (kind: nginx, lighttpd, apache) on a free loopback port, its config
    deploy/KIND/parley.conf rendered into tmpdir and included from a small main config
    that puts its pid file, logs and temp files in tmpdir. Its stderr (error log) is the
    process log. stop() sends SIGTERM to the pid we started and reports exit code 0.
    template and values: another file of deploy/ rendered with these values instead
    (e.g. cluster/nginx.conf; www, fcgi_socket and broker_port are then unused)."""

    def __init__(self, t, kind, tmpdir, www, fcgi_socket, broker_port, port=None,
                 start=True, ready_timeout=15.0, template=None, values=None, name=None):
        self.t = t
        self.kind = kind
        self.name = name or kind
        self.tmpdir = tmpdir
        self.www = www
        self.port = port or free_port()
        self.dir = os.path.join(tmpdir, kind)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        if template is None:
            template = os.path.join(kind, "parley.conf")
            values = dict(ADDR="127.0.0.1", PORT=self.port, WWW=www, FCGI_SOCKET=fcgi_socket,
                          BROKER_PORT=broker_port)
        self.site = os.path.join(self.dir, os.path.basename(template))
        self.text = render(template, self.site, **values)
        self.conf = os.path.join(self.dir, "main.conf")
        with open(self.conf, "w") as f:
            f.write(getattr(self, "_main_" + kind)())
        self.env = {}
        self.popen = None
        self.returncode = None
        self.log_path = None
        self.ready_timeout = ready_timeout
        if start:
            self.start()

    def _main_nginx(self):
        d = self.dir
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        temps = "".join("    %s_temp_path %s/tmp-%s;\n" % (k, d, k) for k in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return ("%sdaemon off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                "error_log stderr notice;\nevents { worker_connections 256; }\n"
                "http {\n    include /etc/nginx/mime.types;\n"
                "    default_type application/octet-stream;\n    access_log %s/access.log;\n"
                "%s    include %s;\n}\n" % (user, d, d, temps, self.site))

    def _main_lighttpd(self):
        d = self.dir
        os.makedirs(os.path.join(d, "upload"), exist_ok=True)
        # The global socket is a spare port; the site has its own $SERVER["socket"].
        return ('server.document-root = "%s"\nserver.bind = "127.0.0.1"\n'
                'server.port = %d\nserver.pid-file = "%s/lighttpd.pid"\n'
                'server.upload-dirs = ( "%s/upload" )\nserver.tag = "lighttpd"\n'
                'include "%s"\n' % (self.www, free_port(), d, d, self.site))

    def _main_apache(self):
        d = self.dir
        mods = ["mpm_event", "authz_core", "mime", "rewrite", "proxy", "proxy_fcgi",
                "proxy_http", "proxy_wstunnel"]
        loads = "".join("LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so\n" % (m, m)
                        for m in mods)
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        return ("ServerRoot %s\nServerName 127.0.0.1\n%sPidFile %s/apache.pid\n"
                "DefaultRuntimeDir %s\nMutex file:%s default\nErrorLog /proc/self/fd/2\n"
                "LogLevel warn\n%sTypesConfig /etc/mime.types\n"
                "StartServers 1\nServerLimit 1\nThreadsPerChild 16\nMaxRequestWorkers 16\n"
                "Include %s\n" % (d, loads, d, d, d, user, self.site))

    def argv(self):
        if self.kind == "nginx":
            return ["/usr/sbin/nginx", "-e", "stderr", "-p", self.dir + "/", "-c", self.conf]
        if self.kind == "lighttpd":
            return ["/usr/sbin/lighttpd", "-D", "-f", self.conf]
        return ["/usr/sbin/apache2", "-f", self.conf, "-DFOREGROUND"]

    def stop(self, check=True):
        if self.kind != "lighttpd":
            return super().stop(check)
        if self.popen is None or self.returncode is not None:
            return self.returncode
        was_running = self.popen.poll() is None
        self.returncode = parley._stop_pid(self.popen)
        self.failed_at_stop = self.t.failed if self.t is not None else 0
        if check and self.t is not None:
            # lighttpd 1.4.69 sometimes exits 1 after a clean SIGTERM stop under load (its
            # own status, not Parley's): it must have stopped on our signal, logged its
            # clean stop, and not crashed or been killed.
            stopped = "server stopped by UID" in self.log_tail(5)
            self.t.ok("lighttpd stops cleanly on SIGTERM%s" % (
                "" if was_running else " (had already exited)"),
                was_running and self.returncode in (0, 1) and stopped,
                "exit %r, clean-stop line logged: %s" % (self.returncode, stopped))
            if self.returncode != 0 or not stopped:
                self.print_log_tail(self.t)
        return self.returncode


def make_www(tmpdir):
    """A www/ for the front server: demo.html and page.html, readable by the server's
    worker user (the temp dir is opened up to 0755 for that). Returns (dir, files)."""
    os.chmod(tmpdir, 0o755)
    www = os.path.join(tmpdir, "www")
    os.makedirs(www, exist_ok=True)
    os.chmod(www, 0o755)
    files = {"demo.html": b"<!doctype html><title>Parley demo</title><p>demo via proxy</p>\n",
             "page.html": b"<!doctype html><p>a static page \xe2\x9c\x93</p>\n"}
    for name, data in files.items():
        p = os.path.join(www, name)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)
    return www, files


# ---------------------------------------------------------------- TLS

def self_signed_cert(tmpdir):
    """A self-signed certificate for localhost and 127.0.0.1 made with openssl:
    (cert path, key path, ssl context that trusts only it)."""
    cert = os.path.join(tmpdir, "cert.pem")
    key = os.path.join(tmpdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ctx = ssl.create_default_context(cafile=cert)
    return cert, key, ctx


class TlsRest(Rest):
    """parley-rest serving HTTPS (--tls-cert/--tls-key); requests verify against ctx."""

    def __init__(self, t, ctx, cert, key, **kw):
        self.ctx = ctx
        flags = dict(kw.pop("flags", None) or {})
        flags.update({"--tls-cert": cert, "--tls-key": key})
        Rest.__init__(self, t, flags=flags, **kw)

    def _conn(self, timeout):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ctx)

    fatal_probe_errors = (ssl.SSLError,)

    def probe(self):
        conn = self._conn(2)
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.close()

    def request(self, method, path, body=None, headers=None, timeout=10, **kw):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn = self._conn(timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            h = parley._headers_dict(resp)
            return Response((resp.status, h, parley._decode_body(h, payload)))
        finally:
            conn.close()


class TlsBroker(Broker):
    """parley-broker serving wss:// (--tls-cert/--tls-key); ready when a TLS handshake
    verified against ctx and a WebSocket upgrade succeed."""

    def __init__(self, t, ctx, cert, key, **kw):
        self.ctx = ctx
        flags = dict(kw.pop("flags", None) or {})
        flags.update({"--tls-cert": cert, "--tls-key": key})
        Broker.__init__(self, t, flags=flags, **kw)

    @property
    def url(self):
        return "wss://127.0.0.1:%d/ws" % self.port

    fatal_probe_errors = (ssl.SSLCertVerificationError,)

    def probe(self):
        import base64
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        with self.ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket"
                       "\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n" % (self.port, key)).encode())
            head = s.recv(4096)
            if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                raise ValueError("upgrade answered %r" % head[:80])
            s.sendall(parley.ws_frame(0x8, b"\x03\xe8"))

    def client(self, name="ws", **kw):
        return parley.WsClient(self.url, name=name, ssl=self.ctx, **kw)


# ---------------------------------------------------------------- HTTP through a server

class Front:
    """Requests to a front server on 127.0.0.1:port, with parley.Rest's request()
    (fresh connection each, JSON bodies decoded); prefix is put before every path."""

    _http = Rest._http  # what Rest.request connects with (127.0.0.1:port)

    def __init__(self, port, prefix=""):
        self.port = port
        self.prefix = prefix

    def request(self, method, path, **kw):
        return Rest.request(self, method, self.prefix + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


# ---------------------------------------------------------------- the proxied scenario

def ws_idle_through(t, name, port, hold_s, want_pings):
    """A raw WebSocket upgraded through the front server on port that sends nothing for
    hold_s seconds but answers the broker's pings: the pings must arrive (not held back
    by the proxy) and the connection must still answer an app-level ping afterwards."""
    sock, buf = parley.ws_handshake(port, path="/ws")
    pings = 0
    closed = None
    try:
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            try:
                op, payload, buf = parley.ws_read_frame(sock, buf, end)
            except socket.timeout:
                break
            if op is None:
                closed = "EOF"
                break
            if op == 0x9:
                pings += 1
                sock.sendall(parley.ws_frame(0xA, payload))
            elif op == 0x8:
                closed = "close frame %r" % payload[:2]
                break
        t.ok("%s: idle WebSocket still open after %.0f s" % (name, hold_s), closed is None,
             "closed: %s" % closed)
        t.ok("%s: the broker's pings came through the proxy (>= %d)" % (name, want_pings),
             pings >= want_pings, "%d pings" % pings)
        if closed is None:
            sock.sendall(parley.ws_frame(0x1, json.dumps({"type": "ping"}).encode()))
            deadline = time.monotonic() + 5
            got = None
            while time.monotonic() < deadline:
                op, payload, buf = parley.ws_read_frame(sock, buf, deadline)
                if op == 0x9:
                    sock.sendall(parley.ws_frame(0xA, payload))
                    continue
                if op == 0x1:
                    got = json.loads(payload.decode())
                    if got.get("type") == "pong":
                        break
                if op is None or op == 0x8:
                    break
            t.eq("%s: the idle connection answers ping with pong" % name,
                 got.get("type") if isinstance(got, dict) else got, "pong")
    finally:
        sock.close()


def chat_through(t, name, ws_url):
    """Two clients through the proxy: a creates a session, b joins, a chats; both see the
    message and the echo reply streamed chunk by chunk."""
    a = parley.WsClient(ws_url, name="a")
    b = parley.WsClient(ws_url, name="b")
    t.eq("%s: connected through the proxy" % name, a.expect(type="connected")["type"],
         "connected")
    b.expect(type="connected")
    sid = a.create_session(title="proxied chat")
    b.join(sid)
    text = "hello through the proxy, streamed word by word"
    ack = a.chat(text)
    t.eq("%s: sender gets message_added" % name, ack["message"]["content"], text)
    seen = b.expect(type="session_update", update_type="message_added")
    t.eq("%s: the other client gets message_added" % name, seen["message"]["content"], text)
    parley.check_reply(t, "%s: reply to a" % name, a.read_reply(sid), sid, text=text)
    parley.check_reply(t, "%s: reply to b" % name, b.read_reply(sid), sid, text=text)
    a.close()
    b.close()
    # the seed's path /ws/{client_id} is routed to the broker too: an envelope from the start
    e = parley.WsClient(ws_url + "/seed-1", name="e")
    g = e.expect(type="connected")
    t.eq("%s: /ws/{client_id} through the proxy: an envelope connected" % name,
         (g.get("client_id"), g.get("channel"), sorted(g.get("data", {}))),
         ("seed-1", None, ["connection_id", "message", "server_info"]))
    e.close()
    return sid


def rest_through(t, name, front, files):
    """REST create/list/get/delete, errors and static files through the front server."""
    r = front.post("/sessions/new", {"title": "via %s" % name})
    t.eq("%s: POST /sessions/new 201" % name, r.status, 201)
    sid = r.body.get("session_id") if isinstance(r.body, dict) else None
    t.match("%s: session_id" % name, sid, parley.SESSION_ID_RE)
    t.eq("%s: title" % name, r.body.get("title") if isinstance(r.body, dict) else r.body,
         "via %s" % name)
    r = front.post("/sessions/%s/messages" % sid, {"content": "first message"})
    t.eq("%s: POST message 201" % name, r.status, 201)
    r = front.get("/sessions?limit=5")
    t.eq("%s: GET /sessions 200" % name, r.status, 200)
    listed = [s.get("session_id") for s in r.body.get("sessions", [])] \
        if isinstance(r.body, dict) else []
    t.ok("%s: GET /sessions lists it" % name, sid in listed, repr(r.body))
    t.eq("%s: GET /sessions?limit=5 query reached the router" % name,
         r.body.get("limit") if isinstance(r.body, dict) else None, 5)
    r = front.get("/sessions/%s" % sid)
    t.eq("%s: GET /sessions/{id} 200" % name, r.status, 200)
    msgs = r.body.get("messages") if isinstance(r.body, dict) else None
    t.eq("%s: GET /sessions/{id} messages" % name,
         [(m.get("role"), m.get("content")) for m in msgs or []], [("user", "first message")])
    r = front.delete("/sessions/%s" % sid)
    t.eq("%s: DELETE /sessions/{id}" % name, (r.status, r.body),
         (200, {"deleted": True, "session_id": sid}))
    parley.check_error(t, "%s: GET deleted session" % name, front.get("/sessions/%s" % sid),
                       404, "session_not_found")
    parley.check_error(t, "%s: unknown route" % name, front.get("/no/such/route"), 404,
                       "not_found")
    r = front.request("PUT", "/sessions")
    parley.check_error(t, "%s: PUT /sessions" % name, r, 405, "method_not_allowed")
    t.eq("%s: 405 Allow header" % name, r.headers.get("allow"), "GET")
    big = {"content": "x" * 70000}
    r = front.post("/sessions/new", big)
    parley.check_error(t, "%s: body above --max-message-size" % name, r, 413,
                       "payload_too_large")
    for fname, data in files.items():
        r = front.get("/" + fname, decode=False)
        t.eq("%s: static /%s" % (name, fname), (r.status, r.body), (200, data))
        t.match("%s: static /%s is text/html" % (name, fname), r.headers.get("content-type"),
                r"^text/html")
    r = front.get("/demo", decode=False)
    t.eq("%s: /demo is www/demo.html" % name, (r.status, r.body), (200, files["demo.html"]))


def run_proxied(t, kind, extra=None):
    """The whole scenario through one web server: parley-broker (pings every second),
    parley-fcgi on a Unix socket, the server from deploy/KIND/parley.conf."""
    tmp = make_tmpdir()
    www, files = make_www(tmp)
    web_port = free_port()
    public = "ws://127.0.0.1:%d/ws" % web_port
    broker = Broker(t, tmpdir=tmp, flags={"--ping-interval": "1", "--idle-timeout": "3"})
    fcgi = Fcgi(t, tmpdir=tmp, ws_port=broker.port, flags={"--public-ws-url": public},
                spawn=(kind == "apache"))
    web = WebServer(t, kind, tmp, www, fcgi.socket_spec, broker.port, port=web_port)
    front = Front(web.port)
    name = kind
    with t.section("%s: GET /" % name):
        r = front.get("/")
        t.eq("%s: GET / 200" % name, r.status, 200)
        t.eq("%s: GET / ws_url is --public-ws-url" % name,
             r.body.get("ws_url") if isinstance(r.body, dict) else r.body, public)
        t.eq("%s: GET / name" % name, r.body.get("name") if isinstance(r.body, dict) else None,
             "parley")
        deadline = time.monotonic() + 5
        while True:
            r = front.get("/health")
            up = isinstance(r.body, dict) and r.body.get("broker", {}).get("up")
            if up or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        t.eq("%s: GET /health: database ok, broker up" % name,
             (r.status, r.body.get("database"), up) if isinstance(r.body, dict) else r.body,
             (200, "ok", True))
    with t.section("%s: REST" % name):
        rest_through(t, name, front, files)
    with t.section("%s: chat" % name):
        chat_through(t, name, public)
    with t.section("%s: idle" % name):
        # --ping-interval 1: the broker's 1 s tick pings a silent connection about every
        # 2 s (the pong restarts the silence); 8 s leave room for 2 under ASan on a loaded
        # machine (5 s with >= 3 once saw 2)
        ws_idle_through(t, name, web.port, 8.0, 2)
    if extra:
        with t.section("%s: extra" % name):
            extra(t, front, fcgi, web)
    web.stop()
    fcgi.stop()
    broker.stop()


# ---------------------------------------------------------------- API keys behind a proxy

def add_api_key(t, db, name):
    """`parley-rest --db DB keys add NAME` (the real command): the pk_... key it prints on
    stdout, after reporting its exit code and the key's format."""
    code, out, err = parley.run_cli("parley-rest", ["--db", db, "keys", "add", name])
    t.eq("keys add %s: exit 0" % name, code, 0)
    key = out.strip()
    t.match("keys add %s: stdout is pk_ + 40 hex" % name, key, r"^pk_[0-9a-f]{40}$")
    if code != 0:
        t.diag("keys add stderr: %s" % err)
    return key


def start_proxied(t, kind, tmp, www):
    """The processes of run_proxied in tmp (whose parley.db may be prepared first):
    parley-broker (pings every second), parley-fcgi on a Unix socket (under spawn-fcgi
    for Apache), the web server from deploy/KIND/parley.conf. Returns (broker, fcgi, web,
    front, public ws url); stop them with web.stop(), fcgi.stop(), broker.stop()."""
    web_port = free_port()
    public = "ws://127.0.0.1:%d/ws" % web_port
    broker = Broker(t, tmpdir=tmp, flags={"--ping-interval": "1", "--idle-timeout": "3"})
    fcgi = Fcgi(t, tmpdir=tmp, ws_port=broker.port, flags={"--public-ws-url": public},
                spawn=(kind == "apache"))
    web = WebServer(t, kind, tmp, www, fcgi.socket_spec, broker.port, port=web_port)
    return broker, fcgi, web, Front(web.port), public
