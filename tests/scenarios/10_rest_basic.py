"""REST basics: GET /, /health, /stats, command line, configuration precedence, SIGTERM."""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import TS_RE, Rest, check_error, free_port, port_open, run_cli  # noqa: E402

INDEX_KEYS = {"name", "version", "endpoints", "ws_url"}
HEALTH_KEYS = {"status", "database", "broker", "brokers", "uptime_s"}
STATS_KEYS = {"uptime_s", "total_requests", "successful", "failed", "active_sessions",
              "websocket_connections", "brokers", "total_sessions_created", "messages_total",
              "avg_response_time", "model"}
# Section 4 endpoints the index must list (path parameters in any {x} / :x / <x> form).
REQUIRED_ENDPOINTS = ["GET /", "GET /health", "GET /stats", "POST /sessions/new",
                      "GET /sessions", "GET /sessions/{}", "DELETE /sessions/{}",
                      "POST /sessions/{}/clear", "POST /sessions/{}/messages"]


def norm_endpoint(s):
    return re.sub(r"\{[^}]*\}|:[A-Za-z_]+|<[^>]*>", "{}", s)


def test_index(t, rest):
    r = rest.get("/")
    t.eq("GET /: status 200", r.status, 200)
    t.ok("GET /: JSON", parley.is_json(r), "content-type %r" % r.headers.get("content-type"))
    b = r.body
    t.keys("GET /: exactly name, version, endpoints, ws_url", b, INDEX_KEYS)
    if not isinstance(b, dict):
        return
    t.eq("GET /: name", b.get("name"), "parley")
    t.ok("GET /: version non-empty string",
         isinstance(b.get("version"), str) and b["version"] != "", repr(b.get("version")))
    eps = b.get("endpoints")
    t.ok("GET /: endpoints is a list of strings",
         isinstance(eps, list) and eps and all(isinstance(e, str) for e in eps), repr(eps))
    if isinstance(eps, list):
        normed = {norm_endpoint(e) for e in eps if isinstance(e, str)}
        missing = [e for e in REQUIRED_ENDPOINTS if e not in normed]
        t.ok("GET /: endpoints list every section 4 endpoint", not missing,
             "missing %r in %r" % (missing, eps))
        bad = [e for e in eps if not (isinstance(e, str) and
                                      re.match(r"^(GET|POST|DELETE|PUT|PATCH) /\S*$", e))]
        t.ok("GET /: endpoints look like 'METHOD /path'", not bad, repr(bad))
    t.eq("GET /: ws_url from --ws-port and Host", b.get("ws_url"),
         "ws://127.0.0.1:%d/ws" % rest.ws_port)

    r = rest.get("/", headers={"Host": "localhost:%d" % rest.port})
    t.eq("GET / with Host localhost: ws_url uses that host",
         r.body.get("ws_url") if isinstance(r.body, dict) else r.body,
         "ws://localhost:%d/ws" % rest.ws_port)
    r = rest.get("/", headers={"Host": "[::1]:%d" % rest.port})
    t.eq("GET / with Host [::1]: ws_url keeps the IPv6 brackets",
         r.body.get("ws_url") if isinstance(r.body, dict) else r.body,
         "ws://[::1]:%d/ws" % rest.ws_port)
    r = rest.get("/", headers={"Host": "evil\"<script>x"})
    parley.check_error(t, "GET / with a hostile Host (no key): refused", r, 403, "forbidden")
    return b.get("version")


def test_health(t, rest):
    r = rest.get("/health")
    t.eq("GET /health: status 200 without broker", r.status, 200)
    t.ok("GET /health: JSON", parley.is_json(r), repr(r.headers.get("content-type")))
    b = r.body
    t.keys("GET /health: exactly status, database, broker, brokers, uptime_s", b, HEALTH_KEYS)
    if not isinstance(b, dict):
        return
    t.eq("GET /health: status degraded with no broker", b.get("status"), "degraded")
    t.eq("GET /health: database ok", b.get("database"), "ok")
    t.eq("GET /health: broker {up:false, connections:0}", b.get("broker"),
         {"up": False, "connections": 0})
    t.eq("GET /health: brokers [] with no broker", b.get("brokers"), [])
    t.is_int("GET /health: uptime_s int >= 0", b.get("uptime_s"), 0)


def test_stats(t, rest):
    r = rest.get("/stats")
    t.eq("GET /stats: status 200", r.status, 200)
    s1 = r.body
    t.keys("GET /stats: exact field set", s1, STATS_KEYS)
    if not isinstance(s1, dict):
        return
    for k in ("uptime_s", "total_requests", "successful", "failed", "active_sessions",
              "websocket_connections", "total_sessions_created", "messages_total"):
        t.is_int("GET /stats: %s int >= 0" % k, s1.get(k), 0)
    avg = s1.get("avg_response_time")
    t.ok("GET /stats: avg_response_time is 0 with no replies",
         type(avg) in (int, float) and avg == 0, repr(avg))
    t.eq("GET /stats: model echo by default", s1.get("model"), "echo")
    t.eq("GET /stats: active_sessions 0 with no broker", s1.get("active_sessions"), 0)
    t.eq("GET /stats: websocket_connections 0 with no broker",
         s1.get("websocket_connections"), 0)
    t.eq("GET /stats: brokers 0 with no broker", s1.get("brokers"), 0)

    r404 = rest.get("/no/such/route")
    t.eq("stats probe: GET /no/such/route is 404", r404.status, 404)
    s2 = rest.get("/stats").body

    def delta(k):
        return s2.get(k, 0) - s1.get(k, 0)

    t.eq("GET /stats: total_requests grew by 2 (a 404 and a /stats)", delta("total_requests"), 2)
    t.eq("GET /stats: failed grew by 1 (the 404)", delta("failed"), 1)
    t.eq("GET /stats: successful grew by 1 (the /stats)", delta("successful"), 1)
    t.ok("GET /stats: successful + failed <= total_requests",
         s2["successful"] + s2["failed"] <= s2["total_requests"], repr(s2))

    sid = rest.new_session()
    s3 = rest.get("/stats").body
    t.eq("GET /stats: total_sessions_created grew by 1",
         s3.get("total_sessions_created", 0) - s2.get("total_sessions_created", 0), 1)
    rest.add_message(sid, "count me")
    s4 = rest.get("/stats").body
    t.eq("GET /stats: messages_total grew by 1",
         s4.get("messages_total", 0) - s3.get("messages_total", 0), 1)
    t.ok("GET /stats: uptime_s does not go back", s4.get("uptime_s", -1) >= s1["uptime_s"],
         "%r then %r" % (s1.get("uptime_s"), s4.get("uptime_s")))


def test_keepalive(t, rest):
    conn = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
    try:
        statuses = []
        socks = []
        for path in ("/health", "/", "/stats", "/sessions"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            socks.append(id(conn.sock))
        t.eq("keep-alive: four requests on one connection all 200", statuses, [200] * 4)
        t.ok("keep-alive: the connection was reused", len(set(socks)) == 1 and
             conn.sock is not None, "sockets %r" % socks)
    finally:
        conn.close()


def test_cli(t, version):
    code, out, err = run_cli("parley-rest", ["--help"])
    t.eq("--help exits 0", code, 0)
    t.ok("--help prints usage naming --port and --db on stdout",
         "--port" in out and "--db" in out, "stdout %r stderr %r" % (out[:300], err[:300]))
    code, out, err = run_cli("parley-rest", ["--version"])
    t.eq("--version exits 0", code, 0)
    t.match("--version prints 'parley-rest <version>'", out.strip(), r"^parley-rest \S+$")
    if version:
        t.eq("--version matches GET / version", out.strip(), "parley-rest " + version)
    for args in (["--no-such-flag"], ["--port", "not-a-number"], ["--port"],
                 ["--port", "70000"], ["--log-level", "loud"],
                 ["--max-message-size", "lots"], ["stray-argument"]):
        code, out, err = run_cli("parley-rest", args + ["--db", os.devnull + ".x"])
        t.eq("bad flag %r exits 2" % args, code, 2)
        t.ok("bad flag %r: message on stderr" % args, err.strip() != "", "stderr empty")


def test_config(t):
    # env alone sets the port
    p = free_port()
    r = Rest(t, flags={"--port": None}, env={"PARLEY_PORT": p}, port=p, name="rest-env-port")
    t.eq("PARLEY_PORT alone: daemon answers on that port", r.get("/health").status, 200)
    r.stop()

    # flag wins over env for the port
    p_flag, p_env = free_port(), free_port()
    r = Rest(t, flags={"--port": p_flag}, env={"PARLEY_PORT": p_env}, port=p_flag,
             name="rest-flag-port")
    t.eq("--port beats PARLEY_PORT: answers on the flag's port", r.get("/health").status, 200)
    t.ok("--port beats PARLEY_PORT: nothing on the env's port", not port_open(p_env),
         "port %d is open" % p_env)
    r.stop()

    # ws port: env alone, then flag over env
    e = free_port()
    r = Rest(t, flags={"--ws-port": None}, env={"PARLEY_WS_PORT": e}, name="rest-env-ws")
    t.eq("PARLEY_WS_PORT alone sets ws_url", r.get("/").body.get("ws_url"),
         "ws://127.0.0.1:%d/ws" % e)
    r.stop()
    f, e = free_port(), free_port()
    r = Rest(t, flags={"--ws-port": f}, env={"PARLEY_WS_PORT": e}, name="rest-flag-ws")
    t.eq("--ws-port beats PARLEY_WS_PORT", r.get("/").body.get("ws_url"),
         "ws://127.0.0.1:%d/ws" % f)
    r.stop()

    # default ws port 8001 (the REST process does not listen on it)
    r = Rest(t, flags={"--ws-port": None}, name="rest-default-ws")
    t.eq("ws_url defaults to port 8001", r.get("/").body.get("ws_url"),
         "ws://127.0.0.1:8001/ws")
    r.stop()

    # public ws url: flag, env alone, flag over env
    url = "wss://chat.example.com/ws"
    r = Rest(t, flags={"--public-ws-url": url}, name="rest-public-url")
    t.eq("--public-ws-url is ws_url as given", r.get("/").body.get("ws_url"), url)
    t.eq("--public-ws-url wins over the Host header",
         r.get("/", headers={"Host": "localhost:%d" % r.port}).body.get("ws_url"), url)
    r.stop()
    r = Rest(t, env={"PARLEY_PUBLIC_WS_URL": "wss://env.example.org/chat/ws"},
             name="rest-env-public-url")
    t.eq("PARLEY_PUBLIC_WS_URL alone is ws_url", r.get("/").body.get("ws_url"),
         "wss://env.example.org/chat/ws")
    r.stop()
    r = Rest(t, flags={"--public-ws-url": url},
             env={"PARLEY_PUBLIC_WS_URL": "wss://env.example.org/ws"}, name="rest-flag-public")
    t.eq("--public-ws-url beats PARLEY_PUBLIC_WS_URL", r.get("/").body.get("ws_url"), url)
    r.stop()

    if parley.PG:
        test_config_db_pg(t)
        return
    # PARLEY_DB alone, then --db on the same file sees what was written
    r = Rest(t, flags={"--db": None}, env={"PARLEY_DB": os.path.join("data", "env.db")},
             start=False, name="rest-env-db")
    os.mkdir(os.path.join(r.tmpdir, "data"))
    r.start()
    sid = r.new_session(title="env db")
    env_db = os.path.join(r.tmpdir, "data", "env.db")
    t.ok("PARLEY_DB alone: the database is created at that path", os.path.exists(env_db),
         "%s missing; tmpdir has %r" % (env_db, os.listdir(r.tmpdir)))
    r.stop()
    r2 = Rest(t, flags={"--db": env_db}, env={"PARLEY_DB": r.db}, tmpdir=r.tmpdir,
              name="rest-flag-db")
    t.eq("--db beats PARLEY_DB: the session written via PARLEY_DB is there",
         r2.get("/sessions/%s" % sid).status, 200)
    r2.stop()


def test_config_db_pg(t):
    """PARLEY_DB takes a PostgreSQL URI as well (SPEC 7); --db beats it."""
    d = parley.make_tmpdir()
    uri = parley.db_for(d)
    r = Rest(t, flags={"--db": None}, env={"PARLEY_DB": uri}, tmpdir=d, name="rest-env-db")
    sid = r.new_session(title="env db")
    t.eq("PARLEY_DB alone (a PostgreSQL URI): the session is stored in that database",
         parley.sql(uri, "select title from sessions where id = '%s';" % sid), (0, ["env db"]))
    r.stop()
    other = os.path.join(d, "other.db")
    r2 = Rest(t, flags={"--db": uri}, env={"PARLEY_DB": other}, tmpdir=d, name="rest-flag-db")
    t.eq("--db beats PARLEY_DB: the session written via PARLEY_DB is there",
         r2.get("/sessions/%s" % sid).status, 200)
    t.ok("--db beats PARLEY_DB: nothing made at PARLEY_DB's path", not os.path.exists(other),
         other)
    r2.stop()


def test_lifecycle(t):
    # SIGINT stops it cleanly too (Ctrl-C under make run)
    r = Rest(t, name="rest-sigint")
    r.popen.send_signal(signal.SIGINT)
    try:
        code = r.popen.wait(10)
    except subprocess.TimeoutExpired:
        code = "still running after 10 s"
    t.eq("SIGINT: exits 0", code, 0)
    r.stop(check=False)

    # a port already taken: exits non-zero with a message instead of hanging
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = Rest(t, port=port, start=False, name="rest-port-taken")
        p = subprocess.Popen(r.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=parley._child_env({}), cwd=r.tmpdir)
        try:
            out, err = p.communicate(timeout=10)
            code = p.returncode
        except subprocess.TimeoutExpired:
            parley._stop_pid(p)
            out, err = p.communicate()
            code = "still running after 10 s"
        t.ok("port already in use: exits non-zero", isinstance(code, int) and code != 0,
             "exit %r" % (code,))
        t.ok("port already in use: says so on stderr", err.strip() != b"", "stderr empty")

    # an unusable database path: exits non-zero with a message
    code, out, err = run_cli("parley-rest", ["--db", "/nonexistent-dir-parley/x/parley.db",
                                             "--port", str(free_port()), "--notify-socket",
                                             "/nonexistent-dir-parley/broker.sock"])
    t.ok("database in a missing folder: exits non-zero", isinstance(code, int) and code != 0,
         "exit %r" % (code,))
    t.ok("database in a missing folder: says so on stderr", err.strip() != "", "stderr empty")
    if parley.PG:
        # a PostgreSQL server that does not answer at start (SPEC 7: db_open needs it)
        code, out, err = run_cli("parley-rest", ["--db", "postgresql:///parley?host="
                                                 "/nonexistent-dir-parley&user=postgres",
                                                 "--port", str(free_port()), "--notify-socket",
                                                 os.path.join(parley.make_tmpdir(), "b.sock")],
                                 timeout=30)
        t.ok("PostgreSQL server not answering at start: exits non-zero",
             isinstance(code, int) and code != 0, "exit %r" % (code,))
        t.ok("PostgreSQL server not answering at start: says so on stderr", err.strip() != "",
             "stderr empty")

    # protected mode: a non-loopback bind without API keys refuses to start...
    r = Rest(t, start=False, name="rest-public-bind")
    r.flags["--bind"] = "0.0.0.0"
    p = subprocess.Popen(r.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=parley._child_env({}), cwd=r.tmpdir)
    try:
        out, err = p.communicate(timeout=10)
        code = p.returncode
    except subprocess.TimeoutExpired:
        parley._stop_pid(p)
        out, err = p.communicate()
        code = "still running after 10 s"
    t.ok("--bind 0.0.0.0 without keys: refuses to start (non-zero exit)",
         isinstance(code, int) and code != 0, "exit %r" % (code,))
    t.ok("--bind 0.0.0.0 without keys: explains on stderr", err.strip() != b"", "stderr empty")
    # ...unless --insecure-no-auth is given
    r = Rest(t, flags={"--bind": "0.0.0.0", "--insecure-no-auth": None}, start=False,
             name="rest-insecure")
    r.argv_extra = ["--insecure-no-auth"]
    r.start()
    t.eq("--bind 0.0.0.0 --insecure-no-auth: starts and answers", r.get("/health").status, 200)
    r.stop()


def test_logging(t):
    canary = "canary-body-%d-do-not-log" % os.getpid()
    r = Rest(t, name="rest-debug-log")
    sid = r.new_session(title="log check")
    r.add_message(sid, canary)
    r.get("/nope")
    r.stop()
    log = r.log_tail(100000)
    t.ok("--log-level debug: logs to stderr", log.strip() != "", "stderr empty")
    t.ok("logs never carry message bodies", canary not in log,
         "found %r in the log" % canary)

    r = Rest(t, flags={"--log-level": "error"}, name="rest-error-log")
    r.get("/nope")
    r.new_session()
    r.stop()
    quiet = r.log_tail(100000)
    t.ok("--log-level error: no debug or info lines",
         not re.search(r"\b(debug|DEBUG|info|INFO)\b", quiet), "log: %r" % quiet[-500:])


def main(t):
    rest = Rest(t)
    version = None
    with t.section("index"):
        version = test_index(t, rest)
    with t.section("health"):
        test_health(t, rest)
    with t.section("stats"):
        test_stats(t, rest)
    with t.section("keep-alive"):
        test_keepalive(t, rest)
    with t.section("unknown route"):
        check_error(t, "GET /nope", rest.get("/nope"), 404, "not_found")
    with t.section("uptime"):
        h = rest.get("/health").body
        t.ok("GET /health: still answering after the others", isinstance(h, dict), repr(h))
    rest.stop()
    with t.section("cli"):
        test_cli(t, version)
    with t.section("config"):
        test_config(t)
    with t.section("lifecycle"):
        test_lifecycle(t)
    with t.section("logging"):
        test_logging(t)


parley.run(main)
