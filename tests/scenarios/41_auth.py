"""API keys (SPEC 3.4, docs/envelope-decisions.md): `parley-rest keys add/list/revoke`
through the real command (stdout, exit codes, key format, never stored or listed in
clear); their effect on REST (401 + WWW-Authenticate: Bearer, public paths stay open,
revocation at once) and on both kinds of upgrade (flat ?api_key= / Authorization: Bearer,
envelope auth, no key: auth_required then unauthorized + 1008); --require-auth; protected
mode (non-loopback bind with no key refuses to start unless --insecure-no-auth)."""

import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import ROOT, TS_RE, Broker, Rest, run_cli  # noqa: E402

KEY_RE = r"^pk_[0-9a-f]{40}$"
FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000"}
# keys list: use today (tests/scenarios/37_quotas.py checks the figures) before the status
LIST_HEADER = ["NAME", "CREATED", "MESSAGES_TODAY", "TOKENS_TODAY", "STATUS"]


def keys(r, *args):
    return run_cli("parley-rest", ["--db", r.db, "--notify-socket", r.notify_socket, "keys"] +
                   list(args))


def env(type_, data=None, channel=None):
    return {"type": type_, "timestamp": "2026-01-20T12:34:56.789Z", "client_id": "test",
            "channel": channel, "data": {} if data is None else data}


STATUS_LINES = []  # (case, status line) of every refused upgrade: HTTP/1.1 checked at the end


def raw_upgrade(port, path="/ws", headers=None, timeout=5):
    """A hand-made upgrade request; returns (status line str, status int)."""
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        parley.send_upgrade(sock, port, path, headers)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in buf and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        line = buf.split(b"\r\n", 1)[0].decode("latin-1")
        m = re.match(r"^HTTP/1\.[01] (\d{3})", line)
        return line, int(m.group(1)) if m else None
    finally:
        sock.close()


def upgrade_status(b, query="", headers=None, case=""):
    """The HTTP status of an upgrade on /ws (101 when it succeeds)."""
    line, st = raw_upgrade(b.port, "/ws" + query, headers)
    if st != 101:
        STATUS_LINES.append((case or query or repr(headers), line))
    return st


def websockets_refusal(url, headers=None):
    """What python3-websockets reports for a refused upgrade: the status code of
    InvalidStatusCode, or the exception's name when it could not read the answer."""
    import websockets
    try:
        c = parley.WsClient(url, name="probe", headers=headers, timeout=5)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)
    c.close()
    return 101


def got(t, c, name, **match):
    """The first frame matching, or {} after reporting its absence as a failure."""
    try:
        return c.expect(**match)
    except parley.ExpectError as e:
        t.fail(name + ": received", str(e))
        return {}


def connect(url, name, headers=None):
    c = parley.WsClient(url, name=name, headers=headers)
    ev = c.expect(type="connected")
    c.id = ev.get("connection_id")
    c.hello = ev
    return c


def test_command(t, r):
    code, out, err = keys(r, "list")
    t.eq("keys list on a fresh database: exit 0", code, 0)
    t.eq("keys list on a fresh database: only the header",
         [l.split() for l in out.splitlines()], [LIST_HEADER])
    code, out, err = keys(r, "add", "alice")
    t.eq("keys add alice: exit 0", code, 0)
    t.ok("keys add: stdout is exactly one line with the key", out.endswith("\n") and
         out.count("\n") == 1, repr(out))
    key = out.strip()
    t.match("keys add: key is pk_ + 40 hex", key, KEY_RE)
    t.ok("keys add: a note on stderr", err.strip() != "" and key not in err, repr(err))
    code, out2, err = keys(r, "add", "bob")
    t.eq("keys add bob: exit 0", code, 0)
    key2 = out2.strip()
    t.match("keys add bob: key format", key2, KEY_RE)
    t.ok("two keys differ", key != key2, key)
    code, out, err = keys(r, "add", "alice")
    t.eq("keys add with a taken name: exit 1", code, 1)
    t.eq("keys add with a taken name: nothing on stdout", out, "")
    t.ok("keys add with a taken name: says why on stderr", "alice" in err, repr(err))
    for args, why in ((["add"], "add without a name"), ([], "no subcommand"),
                      (["frob"], "unknown subcommand"), (["add", "a b"], "name with a space"),
                      (["add", "x" * 65], "name of 65 chars"), (["add", "a/b"], "name with /"),
                      (["list", "extra"], "list with an argument"),
                      (["revoke"], "revoke without a name")):
        code, out, err = keys(r, *args)
        t.eq("keys %s (%s): exit 2" % (" ".join(args)[:30], why), code, 2)
        t.eq("keys %s (%s): nothing on stdout" % (" ".join(args)[:30], why), out, "")
    code, out, err = keys(r, "add", "n." + "x" * 60 + "_-")
    t.eq("keys add with a 64-char name of the allowed characters: exit 0", code, 0)
    code, out, err = keys(r, "revoke", "n." + "x" * 60 + "_-")
    t.eq("keys revoke it: exit 0", code, 0)

    code, out, err = keys(r, "list")
    t.eq("keys list: exit 0", code, 0)
    rows = [l.split() for l in out.splitlines()]
    t.eq("keys list: header NAME CREATED MESSAGES_TODAY TOKENS_TODAY STATUS", rows[:1],
         [LIST_HEADER])
    byname = {row[0]: row for row in rows[1:]}
    t.eq("keys list: one row per key", sorted(byname),
         sorted(["alice", "bob", "n." + "x" * 60 + "_-"]))
    for n in ("alice", "bob"):
        row = byname.get(n, [])
        t.ok("keys list %s: NAME CREATED(ISO) 0 0 valid" % n,
             len(row) == 5 and TS_RE.match(row[1]) and row[2:] == ["0", "0", "valid"],
             repr(row))
    row = byname.get("n." + "x" * 60 + "_-", [])
    t.ok("keys list: revoked key shows 'revoked TIME'",
         len(row) == 6 and TS_RE.match(row[1]) and row[4] == "revoked" and TS_RE.match(row[5]),
         repr(row))
    t.ok("keys list never shows a key", key not in out and key2 not in out and "pk_" not in out,
         repr(out))

    # the key is not stored in clear
    if parley.is_pg(r.db):
        dump_cmd, dump_name = [os.path.join(os.path.dirname(parley.PSQL), "pg_dump"),
                               "-d", r.db], "pg_dump"
        blob = pg_database_files(r.db)
        t.ok("database files hold the key rows (read after a CHECKPOINT)",
             b"alice" in blob and b"bob" in blob, "%d bytes, no key names" % len(blob))
    else:
        dump_cmd, dump_name = [parley.SQLITE, "-batch", r.db, ".dump"], "sqlite3 .dump"
        blob = b""
        for suffix in ("", "-wal", "-shm"):
            try:
                with open(r.db + suffix, "rb") as f:
                    blob += f.read()
            except OSError:
                pass
    for k, n in ((key, "alice"), (key2, "bob")):
        t.ok("database file bytes do not hold %s's key (nor its hex part)" % n,
             k.encode() not in blob and k[3:].encode() not in blob, "found in the file")
    p = __import__("subprocess").run(dump_cmd, capture_output=True, timeout=30)
    dump = p.stdout.decode("utf-8", "replace")
    t.ok("%s works" % dump_name, p.returncode == 0 and "CREATE TABLE" in dump, p.stderr[:200])
    t.ok("%s does not hold the keys" % dump_name, key not in dump and key2 not in dump and
         key[3:] not in dump and key2[3:] not in dump, "found in the dump")
    t.ok("%s names the keys (hashed rows exist)" % dump_name, "alice" in dump and "bob" in dump,
         "no key rows")
    return key, key2


def pg_database_files(db):
    """The bytes of a PostgreSQL database's own files (base/OID/ of the pass's data
    directory), read after a CHECKPOINT so that its rows are on disk."""
    code, lines = parley.sql(db, "CHECKPOINT; SELECT oid FROM pg_database "
                                 "WHERE datname = current_database();")
    data = os.environ.get("PARLEY_TEST_PG_DATA", "")
    if code != 0 or not lines or not data:
        return b""
    blob = b""
    d = os.path.join(data, "base", lines[-1])
    for n in sorted(os.listdir(d)):
        try:
            with open(os.path.join(d, n), "rb") as f:
                blob += f.read()
        except OSError:
            pass
    return blob


def test_rest(t, r, key):
    for path in ("/sessions", "/stats", "/metrics", "/sessions/0123456789abcdef"):
        resp = r.get(path)
        parley.check_error(t, "GET %s without a key" % path, resp, 401, "unauthorized")
        t.match("GET %s without a key: WWW-Authenticate: Bearer" % path,
                resp.headers.get("www-authenticate"), r"^Bearer\b")
    resp = r.post("/sessions/new", {})
    parley.check_error(t, "POST /sessions/new without a key", resp, 401, "unauthorized")
    for hdr, why in (("Bearer pk_" + "0" * 40, "a wrong key"), ("Bearer " + key + "x", "key+x"),
                     ("Bearer " + key[:-1], "a truncated key"), ("Basic " + key, "Basic scheme"),
                     ("Bearer", "empty Bearer"), (key, "no scheme")):
        resp = r.get("/sessions", headers={"Authorization": hdr})
        parley.check_error(t, "GET /sessions with %s" % why, resp, 401, "unauthorized")
    good = {"Authorization": "Bearer " + key}
    t.eq("GET /sessions with the key: 200", r.get("/sessions", headers=good).status, 200)
    resp = r.request("POST", "/sessions/new", body={"title": "authed"}, headers=good)
    t.eq("POST /sessions/new with the key: 201", resp.status, 201)
    for path in ("/", "/health", "/demo", "/docs"):
        t.eq("GET %s without a key stays 200" % path, r.get(path).status, 200)
    return resp.body.get("session_id")


def test_broker(t, r, b, key, key2):
    # the broker was told about the keys: connected says auth_required true
    deadline = time.monotonic() + 3
    while True:
        c = connect(b.url, "probe")
        c.close()
        if c.hello.get("server_info", {}).get("auth_required") is True or \
                time.monotonic() > deadline:
            break
        time.sleep(0.1)
    t.eq("connected: server_info.auth_required true once a key exists",
         c.hello.get("server_info", {}).get("auth_required"), True)

    # flat with ?api_key=good
    t.eq("flat ?api_key=good: upgrade 101", upgrade_status(b, "?api_key=" + key), 101)
    t.eq("flat Authorization: Bearer good: upgrade 101",
         upgrade_status(b, headers={"Authorization": "Bearer " + key}), 101)
    t.eq("flat ?api_key=good among other parameters: upgrade 101",
         upgrade_status(b, "?x=1&api_key=" + key + "&y=2"), 101)
    with t.section("flat ?api_key=good"):
        test_flat_good(t, b, key, key2)


def test_flat_good(t, b, key, key2):
    g = connect(b.url, "G", headers={"Authorization": "Bearer " + key2})
    t.ok("flat Authorization: Bearer good: works", g.ping_ok(), "no pong")
    g.close()
    f = connect(b.url + "?api_key=" + key, "F")
    sid = f.create_session()
    t.ok("flat ?api_key=good: connected and create_session works", bool(sid), sid)
    ack = f.chat("hello with a key")
    t.eq("flat ?api_key=good: chat acknowledged", ack["message"]["content"], "hello with a key")
    f.close()


def test_broker_more(t, r, b, key, key2):
    t.eq("flat ?api_key=bad: upgrade refused 401",
         upgrade_status(b, "?api_key=pk_" + "1" * 40), 401)
    t.eq("flat Authorization: Bearer bad: upgrade refused 401",
         upgrade_status(b, headers={"Authorization": "Bearer pk_" + "2" * 40}), 401)
    t.eq("flat ?api_key=bad through python3-websockets: InvalidStatusCode 401",
         websockets_refusal(b.url + "?api_key=pk_" + "1" * 40), 401)

    # no key: connected with auth_required, then a flat message -> unauthorized + 1008
    n = connect(b.url, "N")
    t.eq("no key: connected, auth_required true",
         n.hello.get("server_info", {}).get("auth_required"), True)
    n.send({"type": "create_session"})
    e = got(t, n, "no key, flat message: error frame before the close", type="error")
    t.eq("no key, flat message: error unauthorized", (e.get("code"), e.get("request_type")),
         ("unauthorized", "create_session"))
    t.eq("no key, flat message: close 1008", n.wait_closed(5), 1008)
    n = connect(b.url, "N2")
    n.send(env("subscribe", {"channel": "x"}))
    e = got(t, n, "no key, envelope subscribe: error frame before the close", type="error")
    t.eq("no key, envelope subscribe before auth: error unauthorized",
         e.get("data", {}).get("code"), "unauthorized")
    t.eq("no key, envelope subscribe before auth: close 1008", n.wait_closed(5), 1008)
    t.eq("nothing was stored by unauthenticated clients",
         parley.sql(b.db, "select count(*) from sessions where channel = 'x';")[1], ["0"])

    # envelope auth good / bad
    a = connect(b.url, "A")
    a.send(env("auth", {"api_key": key}))
    m = a.expect(type="auth_success")
    t.eq("envelope auth good: auth_success {}", m.get("data"), {})
    a.send(env("subscribe", {"channel": "secure-room"}))
    m = a.expect(type="subscription_success")
    t.eq("envelope after auth: subscribe works", m.get("channel"), "secure-room")
    a.close()
    for why, data in (("a wrong key", {"api_key": "pk_" + "3" * 40}), ("no api_key", {}),
                      ("api_key a number", {"api_key": 5})):
        x = connect(b.url, "X")
        x.send(env("auth", data))
        m = got(t, x, "envelope auth with %s: auth_failure" % why, type="auth_failure")
        if m:
            t.ok("envelope auth with %s: auth_failure with data.reason" % why,
                 set(m.get("data", {})) == {"reason"} and isinstance(m["data"]["reason"], str)
                 and m["data"]["reason"].strip() != "", repr(m))
        t.eq("envelope auth with %s: close 1008" % why, x.wait_closed(5), 1008)

    # revocation: refused for a new upgrade within 1 s; the other key still works
    code, out, err = keys(r, "revoke", "alice")
    t.eq("keys revoke alice: exit 0", code, 0)
    t.eq("keys revoke alice: stdout", out, "revoked alice\n")
    t0 = time.monotonic()
    st = None
    while time.monotonic() - t0 < 1.0:
        st = upgrade_status(b, headers={"Authorization": "Bearer " + key}, case="revoked")
        if st == 401:
            break
        time.sleep(0.05)
    t.eq("revoked key (Authorization: Bearer) refused for a new upgrade within 1 s", st, 401)
    t.eq("revoked key (?api_key=) refused", upgrade_status(b, "?api_key=" + key), 401)
    x = connect(b.url, "X")
    x.send(env("auth", {"api_key": key}))
    m = got(t, x, "envelope auth with the revoked key: an answer",
            type=parley.one_of("auth_failure", "auth_success"))
    t.eq("envelope auth with the revoked key: auth_failure", m.get("type"), "auth_failure")
    t.eq("envelope auth with the revoked key: close 1008", x.wait_closed(5), 1008)
    t.eq("the other key still upgrades (Authorization: Bearer)",
         upgrade_status(b, headers={"Authorization": "Bearer " + key2}), 101)
    t.eq("the other key still upgrades (?api_key=)", upgrade_status(b, "?api_key=" + key2), 101)
    code, out, err = keys(r, "revoke", "alice")
    t.eq("keys revoke of an already revoked key: exit 1", code, 1)
    code, out, err = keys(r, "revoke", "nobody")
    t.eq("keys revoke unknown name: exit 1", code, 1)
    t.eq("keys revoke unknown name: nothing on stdout", out, "")


def test_rest_revoke(t, r, key, key2):
    resp = r.get("/sessions", headers={"Authorization": "Bearer " + key})
    parley.check_error(t, "REST with the revoked key at once", resp, 401, "unauthorized")
    t.eq("REST with the other key: 200",
         r.get("/sessions", headers={"Authorization": "Bearer " + key2}).status, 200)


def test_require_auth(t):
    r = Rest(t, name="parley-rest-require", flags={"--www-dir": WWW}, start=False)
    r.argv_extra = ["--require-auth"]
    r.start()
    parley.check_error(t, "--require-auth, no keys: GET /sessions", r.get("/sessions"), 401,
                       "unauthorized")
    t.eq("--require-auth: GET /health stays 200", r.get("/health").status, 200)
    r.stop()
    b = Broker(t, name="parley-broker-require", flags=FLAGS, start=False)
    b.argv_extra = ["--require-auth"]
    b.start()
    c = connect(b.url, "C")
    t.eq("--require-auth broker, no keys: auth_required true",
         c.hello.get("server_info", {}).get("auth_required"), True)
    c.send({"type": "ping"})
    t.eq("--require-auth broker: unauthenticated ping -> unauthorized",
         got(t, c, "--require-auth broker: error frame", type="error").get("code"),
         "unauthorized")
    t.eq("--require-auth broker: close 1008", c.wait_closed(5), 1008)
    b.stop()


def test_protected(t):
    for binary in ("parley-rest", "parley-broker"):
        d = parley.make_tmpdir()
        db = parley.db_for(d, "p.db")
        port = parley.free_port()
        args = ["--db", db, "--bind", "0.0.0.0", "--port", str(port),
                "--notify-socket", os.path.join(d, "b.sock")]
        t0 = time.monotonic()
        code, out, err = run_cli(binary, args, timeout=5)
        took = time.monotonic() - t0
        t.ok("%s --bind 0.0.0.0 with no key: exits non-zero within 5 s" % binary,
             code not in (None, 0), "exit %r after %.1f s" % (code, took))
        t.ok("%s protected mode: message names 'keys add' and '--insecure-no-auth'" % binary,
             "keys add" in out + err and "--insecure-no-auth" in out + err, repr(err[-400:]))
        t.ok("%s protected mode: nothing listens" % binary, not parley.port_open(port), "")

        cls = Rest if binary == "parley-rest" else Broker
        kw = {"llm": "echo"} if cls is Broker else {}
        p = cls(t, start=False, name=binary + "-insecure", **kw)
        p.flags["--bind"] = "0.0.0.0"
        p.argv_extra = ["--insecure-no-auth"]
        try:
            p.start()
            t.ok("%s --bind 0.0.0.0 --insecure-no-auth: starts and answers on 127.0.0.1"
                 % binary, p.alive(), "")
        except RuntimeError as e:
            t.fail("%s --bind 0.0.0.0 --insecure-no-auth: starts" % binary, str(e))
        p.stop()

        p = cls(t, start=False, name=binary + "-keyed", **kw)
        p.flags["--bind"] = "0.0.0.0"
        code, out, err = run_cli("parley-rest", ["--db", p.db, "keys", "add", "ops"])
        t.eq("keys add on a fresh database: exit 0", code, 0)
        try:
            p.start()
            t.ok("%s --bind 0.0.0.0 with a key present: starts" % binary, p.alive(), "")
        except RuntimeError as e:
            t.fail("%s --bind 0.0.0.0 with a key present: starts" % binary, str(e))
        p.stop()


def make_www():
    d = parley.make_tmpdir()
    for n in ("demo.html", "docs.html"):
        with open(os.path.join(d, n), "w") as f:
            f.write("<!doctype html><p>%s</p>\n" % n)
    return d


def main(t):
    global WWW
    WWW = make_www()
    r = Rest(t, flags={"--www-dir": WWW})
    b = Broker(t, tmpdir=r.tmpdir, port=r.ws_port, flags=FLAGS)
    c = connect(b.url, "before")
    t.eq("no keys: connected auth_required false",
         c.hello.get("server_info", {}).get("auth_required"), False)
    t.ok("no keys: unauthenticated flat client served", c.ping_ok(), "no pong")
    c.close()
    t.eq("no keys: REST GET /sessions 200 without a key", r.get("/sessions").status, 200)
    key = key2 = None
    with t.section("command"):
        key, key2 = test_command(t, r)
    if key:
        with t.section("rest"):
            test_rest(t, r, key)
        with t.section("broker"):
            test_broker(t, r, b, key, key2)
        with t.section("broker, continued"):
            test_broker_more(t, r, b, key, key2)
        with t.section("rest after revoke"):
            test_rest_revoke(t, r, key, key2)
    parley.close_clients()
    b.stop()
    r.stop()
    with t.section("require-auth"):
        test_require_auth(t)
    with t.section("protected mode"):
        test_protected(t)
    bad = [x for x in STATUS_LINES if not x[1].startswith("HTTP/1.1 ")]
    t.ok("refused upgrades are answered in HTTP/1.1 (%d seen)" % len(STATUS_LINES),
         STATUS_LINES and not bad, "%d of %d not HTTP/1.1, e.g. %r" % (
             len(bad), len(STATUS_LINES), bad[:2]))


parley.run(main)
