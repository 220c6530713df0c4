"""Parley on many machines (SPEC 8), in network namespaces made by this test
(tests/lib/netns.py): hosts front (nginx from deploy/cluster/nginx.conf), rest
(parley-rest), b1, b2, b3 (parley-broker each, --node-id bN --redis --bind <own address>
--insecure-no-auth, its own notification socket) and data (PostgreSQL 15 over TCP and
Redis 7, tests/lib/pgcluster.py and tests/lib/redis.py), on one switch. The clients
are this test's own sockets made inside the front host. Needs root and `ip netns`; without
them every check is reported skipped with the reason. It runs in every pass; the
topology is PostgreSQL by nature, so on the SQLite passes too it runs its own cluster in
the data host (and ignores the PostgreSQL pass's).

What works today, without the cross-broker relay:
- every process is up and answers; through nginx, GET /health is 200 with database ok,
  GET / names the public ws_url, /demo is served by the front host;
- three WebSocket clients through nginx /ws get `connected`, one on each broker
  (least_conn); each broker answers on its own address;
- a chat on one broker is stored in PostgreSQL (seq 1..n) and visible through REST GET
  /sessions/{id} via nginx;
- kill -9 of a broker: its client is disconnected, a message posted through REST meanwhile
  is stored, new connections through nginx reach the other brokers, and a client
  reconnected through nginx that joins with `since` gets exactly what it missed; the
  broker restarted on its host serves again;
- a broker host cut off the network (link down): new connections through nginx still
  succeed (proxy_connect_timeout, then the next broker), and none lands on it.

Then the cross-broker checks (SPEC 8): clients on different brokers in one session see
identical event sequences (presence, typing, messages in seq order, the streamed replies,
a REST post); each reply is generated once; kill -9 of the broker generating a reply: the
reply is taken over (interrupted, then answered again); Redis stopped for 5 s during chat:
nothing lost, order kept; a broker started later catches up.

Process logs (brokers, REST, nginx, Redis, PostgreSQL) are copied to
tests/output/topology/<pass>/ at the end.
"""

import json
import os
import shutil
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import deploy  # noqa: E402
import netns  # noqa: E402
import parley  # noqa: E402
import pgcluster  # noqa: E402
import redis  # noqa: E402
from parley import ROOT, check_reply, strict_equal  # noqa: E402

PASS = os.environ.get("PARLEY_PASS", "release")
OUT_DIR = os.path.join(ROOT, "tests", "output", "topology", PASS)

# Ports inside the namespaces (each host has its own stack: no clash with anything on the
# machine; never 8000/8001).
PG_PORT = 5432
REDIS_PORT = 6379
REST_PORT = 18000
BROKER_PORT = 18001
FRONT_PORT = 18080
BROKERS = ("b1", "b2", "b3")
HOSTS = ("front", "rest") + BROKERS + ("data",)

# Time limits, wide for ASan on a loaded 2-core machine.
READY_S = 60.0    # a process answers after its start
ANSWER_S = 30.0   # a request's answer, a whole echo reply
GONE_S = 15.0     # a killed broker's client sees its connection close
RELAY_S = 10.0
TAKEOVER_S = 25.0  # another broker finishes a dead broker's reply (SPEC: within 5 s)

BROKER_FLAGS = {"--rate-limit": "1000", "--rate-burst": "2000", "--log-level": "debug"}


def connected(c):
    """c, once its `connected` arrived, with c.id its connection_id."""
    c.id = c.expect(type="connected", timeout=ANSWER_S).get("connection_id")
    return c


def wait(pred, timeout, interval=0.1):
    return netns.wait_for(pred, timeout, interval)


# ---------------------------------------------------------------- the deployment

class Deployment:
    """The topology and every process on it. start() builds it; stop() stops it all."""

    def __init__(self, t):
        self.t = t
        self.topo = None
        self.pg = None
        self.redis = None
        self.rest = None
        self.brokers = {}
        self.nginx = None
        self.tmp = parley.make_tmpdir("parley-topo-")
        self.logs = []  # (label, path) copied to OUT_DIR at the end

    # ---- addresses
    def addr(self, host):
        return self.topo.addr(host)

    @property
    def front_url(self):
        return "http://%s:%d" % (self.addr("front"), FRONT_PORT)

    @property
    def front_ws(self):
        return "ws://%s:%d/ws" % (self.addr("front"), FRONT_PORT)

    @property
    def db(self):
        return self.pg.tcp_uri("parley")

    # ---- building it
    def start(self):
        t = self.t
        t0 = time.monotonic()
        self.topo = netns.Topology(HOSTS, log=t.diag)
        t.diag("topology %s: %s" % (self.topo.subnet, ", ".join(
            "%s=%s" % (h, self.addr(h)) for h in HOSTS)))
        shutil.rmtree(OUT_DIR, ignore_errors=True)  # this pass's logs of an earlier run
        os.makedirs(OUT_DIR, exist_ok=True)
        self.pg = pgcluster.Cluster(prefix="parley-topo-pg-", port=PG_PORT,
                                    listen=self.addr("data"),
                                    hba=["host all all %s trust" % self.topo.subnet],
                                    wrap=lambda argv: self.topo.wrap("data", argv))
        self.topo.on_stop(self.pg.destroy)
        self.pg.start()
        self.pg.create_database("parley")
        self.logs.append(("postgresql.log", self.pg.log_path))
        self.redis = redis.RedisServer(port=REDIS_PORT, bind=self.addr("data"),
                                       log_dir=self.tmp,
                                       runner=lambda argv, **kw: self.topo.run("data", argv,
                                                                               **kw))
        self.topo.on_stop(self.redis.destroy)
        self.redis.start()
        self.logs.append(("redis.log", self.redis.log_path))
        t.diag("PostgreSQL and Redis up on data in %.1f s" % (time.monotonic() - t0))
        self.rest = netns.NsRest(t, self.topo, "rest", client_host="front", port=REST_PORT,
                                 ws_port=BROKER_PORT, ready_timeout=READY_S, flags={
                                     "--db": self.db, "--redis": self.redis.url,
                                     "--public-url": self.front_url,
                                     "--allowed-host": self.addr("rest"),
                                     "--public-ws-url": self.front_ws})
        for b in BROKERS:
            self.start_broker(b)
        www, self.www_files = deploy.make_www(self.tmp)
        values = {"ADDR": self.addr("front"), "PORT": FRONT_PORT, "WWW": www,
                  "REST_1": "%s:%d" % (self.addr("rest"), REST_PORT)}
        for i, b in enumerate(BROKERS, 1):
            values["BROKER_%d" % i] = "%s:%d" % (self.addr(b), BROKER_PORT)
        self.nginx = netns.NsNginx(t, self.topo, "front", self.tmp, "cluster/nginx.conf",
                                   values, FRONT_PORT, ready_timeout=READY_S)
        t.diag("deployment up in %.1f s (binaries from %s)" % (time.monotonic() - t0,
                                                              parley.BIN_DIR))

    def start_broker(self, name, host=None, tmpdir=None):
        """parley-broker `name` on host (default: the host of that name), as the
        deployment runs it; a restart passes the old one's tmpdir."""
        host = host or name
        b = netns.NsBroker(self.t, self.topo, host, client_host="front", tmpdir=tmpdir,
                           port=BROKER_PORT, ready_timeout=READY_S, flags=dict(BROKER_FLAGS, **{
                               "--db": self.db, "--node-id": name,
                               "--redis": self.redis.url, "--public-ws-url": self.front_ws,
                               "--allowed-host": self.addr(host)}))
        self.brokers[name] = b
        return b

    # ---- clients, all from the front host
    def via_nginx(self, name):
        """A WebSocket client through nginx /ws."""
        return connected(self.topo.ws_client("front", self.front_ws, client_name=name,
                                             timeout=ANSWER_S))

    def direct(self, broker, name):
        """A WebSocket client on broker's own address."""
        return connected(self.brokers[broker].client(name, timeout=ANSWER_S))

    def http(self, method, path, body=None, **kw):
        """A request through nginx."""
        return self.topo.http("front", self.addr("front"), FRONT_PORT, method, path,
                              body=body, timeout=ANSWER_S, **kw)

    def sql(self, query):
        code, lines = self.pg.psql("parley", query)
        if code != 0:
            raise RuntimeError("psql: %s" % "\n".join(lines))
        return lines

    def stored(self, sid):
        """[(id, seq, role, content, status)] of a session, in seq order."""
        rows = self.sql("select id, seq, role, content, coalesce(status, '-') from messages "
                        "where session_id = '%s' order by seq;" % sid)
        out = []
        for r in rows:
            i, s, role, rest = r.split("|", 3)
            content, _, status = rest.rpartition("|")
            out.append((int(i), int(s), role, content, status))
        return out

    def new_subscriber(self, host, seconds):
        """Whether Redis has a subscriber connection from host at most `seconds` old."""
        with self.redis.client() as rc:
            listing = rc.command("CLIENT", "LIST")
        for line in listing.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if f.get("addr", "").rsplit(":", 1)[0] == self.addr(host) and \
                    "P" in f.get("flags", "") and int(f.get("age", "1000000")) <= seconds:
                return True
        return False

    def established(self, broker):
        """Established TCP connections on broker's port (seen inside its host)."""
        p = self.topo.exec(broker, ["ss", "-Htn", "state", "established",
                                    "( sport = :%d )" % BROKER_PORT])
        return len([x for x in p.stdout.decode().splitlines() if x.strip()])

    # ---- stopping it
    def stop(self):
        t = self.t
        parley.close_clients()
        for proc in [self.nginx] + list(self.brokers.values()) + [self.rest]:
            if proc is not None and proc.popen is not None:
                proc.stop()
                # every run's log (a restarted process writes .1, .2, ... beside .0)
                for name in sorted(os.listdir(os.path.dirname(proc.log_path))):
                    if name.endswith(".stderr"):
                        self.logs.append((name.replace("parley-", "").replace(
                            ".stderr", ".log"), os.path.join(os.path.dirname(proc.log_path),
                                                             name)))
        if self.redis is not None and self.redis.popen is not None:
            t.eq("redis-server exits 0 on SIGTERM", self.redis.stop(), 0)
        if self.pg is not None:
            self.pg.stop()
        self.save_logs()
        if self.topo is not None:
            self.topo.stop_all()
        t.ok("namespaces and route removed", self.topo is None or not [
            n for n in os.listdir(netns.NETNS_DIR) if n.startswith(self.topo.prefix)],
            os.listdir(netns.NETNS_DIR))

    def save_logs(self):
        try:
            os.makedirs(OUT_DIR, exist_ok=True)
            for label, path in self.logs:
                if path and os.path.exists(path):
                    shutil.copyfile(path, os.path.join(OUT_DIR, label))
        except OSError as e:
            self.t.diag("saving the logs: %s" % e)


# ---------------------------------------------------------------- what works today

def check_up(t, d):
    for name, proc in [("rest", d.rest)] + sorted(d.brokers.items()) + [("nginx", d.nginx)]:
        t.ok("%s is running (pid %d)" % (proc.name, proc.popen.pid), proc.alive(),
             "exit %s" % proc.popen.returncode)
    t.ok("redis-server on data is running and answers PING from front",
         d.redis.alive() and d.redis.client(connect=d.topo.connector("front")).ping())
    p = d.topo.exec("front", [parley.PSQL, "-X", "-At", "-d", d.db, "-c", "select 1;"],
                    env=pgcluster._env())
    t.eq("PostgreSQL on data answers over TCP from front",
         (p.returncode, p.stdout.decode().split()), (0, ["1"]))
    r = d.rest.get("/health")
    t.eq("parley-rest answers on its own address: /health 200, database ok",
         (r.status, r.body.get("database") if isinstance(r.body, dict) else r.body),
         (200, "ok"))


def check_rest_through_nginx(t, d):
    r = d.http("GET", "/health")
    t.eq("nginx -> REST: GET /health 200", r.status, 200)
    t.eq("nginx -> REST: /health database ok",
         r.body.get("database") if isinstance(r.body, dict) else r.body, "ok")
    r = d.http("GET", "/")
    t.eq("nginx -> REST: GET / ws_url is the front's /ws",
         (r.status, r.body.get("ws_url") if isinstance(r.body, dict) else r.body),
         (200, d.front_ws))
    r = d.http("GET", "/demo", decode=False)
    t.eq("nginx: /demo served from the front host's www/", (r.status, r.body),
         (200, d.www_files["demo.html"]))
    parley.check_error(t, "nginx -> REST: unknown route", d.http("GET", "/no/such"), 404,
                       "not_found")


def check_ws_through_nginx(t, d):
    clients = []
    for i in range(3):
        c = d.via_nginx("nginx-%d" % i)
        clients.append(c)
        t.ok("nginx /ws client %d: connected with a connection_id" % i,
             isinstance(c.id, str) and c.id, repr(c.id))
    spread = wait(lambda: [d.established(b) for b in BROKERS] == [1, 1, 1] and
                  [d.established(b) for b in BROKERS], 10)
    t.eq("nginx /ws: least_conn puts one client on each broker",
         spread or [d.established(b) for b in BROKERS], [1, 1, 1])
    for c in clients:
        t.ok("nginx /ws client %s: ping answered through the proxy" % c.name, c.ping_ok())
        c.close()
    for b in BROKERS:
        c = d.direct(b, "direct-" + b)
        info = c.received[0].get("server_info") if c.received else None
        t.ok("%s answers on its own address %s: connected" % (b, d.addr(b)),
             isinstance(info, dict) and info.get("name") == "parley", repr(c.received[:1]))
        c.close()


def settled(d, sid, fetch):
    """(rows, fetch()) with the session's stored rows the same just before and just after
    fetch() (another broker may still be storing a reply: see extra_replies)."""
    for _ in range(20):
        before = d.stored(sid)
        got = fetch()
        after = d.stored(sid)
        if before == after:
            return after, got
        time.sleep(0.5)
    raise RuntimeError("the session's rows kept changing: %r" % (after,))


def extra_replies(t, name, rows):
    """Reports (as a diagnostic) assistant rows beyond the first for a user message:
    today every broker's reconcile pass answers the shared reply queue, so a reply that
    streams while another broker looks may be generated twice (SPEC 8 wants once: the
    gated check `relay: each reply generated once`). With the echo assistant a reply is
    its prompt's text, so a second reply is an assistant row whose text an earlier one
    had, wherever it was stored. Returns the rows without them."""
    kept, extra, answered = [], [], set()
    for r in rows:
        if r[2] == "assistant" and r[3] in answered:
            extra.append(r)
            continue
        kept.append(r)
        if r[2] == "assistant":
            answered.add(r[3])
    if extra:
        t.diag("%s: %d more replies stored for one user message (another broker answered "
               "too): %r" % (name, len(extra), [(r[1], r[3][:30]) for r in extra]))
    return kept


def check_history(t, name, rows, want):
    """rows (stored, seq order): seq 1..n with no gap; the user messages are exactly
    want's user texts in order; each is followed by its echo reply, status complete."""
    t.eq("%s: seq 1..n in PostgreSQL, no gap" % name, [r[1] for r in rows],
         list(range(1, len(rows) + 1)))
    kept = extra_replies(t, name, rows)
    t.eq("%s: stored as acknowledged (role, content, status), nothing lost" % name,
         [(r[2], r[3], r[4]) for r in kept], want)


def check_chat_stored(t, d):
    c = d.direct("b1", "writer")
    sid = c.create_session(title="on many machines", timeout=ANSWER_S)
    text = "stored in PostgreSQL behind three brokers"
    ack = c.chat(text, timeout=ANSWER_S)
    check_reply(t, "chat on b1", c.read_reply(sid, timeout=ANSWER_S), sid, text=text)
    c.close()
    rows, r = settled(d, sid, lambda: d.http("GET", "/sessions/%s" % sid))
    check_history(t, "chat on b1", rows, [("user", text, "-"), ("assistant", text, "complete")])
    t.eq("chat on b1: the acknowledgement is the stored message (id, seq)",
         (ack["message"].get("id"), ack["message"].get("seq")), rows[0][:2] if rows else None)
    msgs = r.body.get("messages") if isinstance(r.body, dict) else None
    t.eq("chat on b1: GET /sessions/{id} through nginx shows what is stored",
         (r.status, [(m.get("id"), m.get("seq"), m.get("role"), m.get("content"))
                     for m in msgs or []]), (200, [x[:4] for x in rows]))
    t.eq("chat on b1: REST's title is the session's",
         r.body.get("title") if isinstance(r.body, dict) else r.body, "on many machines")
    return sid


def check_broker_kill(t, d):
    """kill -9 of b2 with a client on it; the client comes back through nginx."""
    victim = "b2"
    c = d.direct(victim, "on-b2")
    sid = c.create_session(timeout=ANSWER_S)
    c.chat("before the crash", timeout=ANSWER_S)
    first_reply = c.read_reply(sid, timeout=ANSWER_S)[-1]["message_id"]
    ack2 = c.chat("the last one b2 acknowledged", timeout=ANSWER_S)
    c.read_reply(sid, timeout=ANSWER_S)
    old = d.brokers[victim]
    code = old.kill9()
    t.eq("kill -9 %s: exit status -9" % victim, code, -9)
    t.ok("kill -9 %s: its client sees the connection close" % victim,
         c.wait_closed(GONE_S) is not None or c.closed, "still open after %.0f s" % GONE_S)
    r = d.http("POST", "/sessions/%s/messages" % sid, {"content": "posted while b2 is down"})
    t.eq("kill -9 %s: POST a message through nginx meanwhile: 201" % victim, r.status, 201)
    posted = r.body if isinstance(r.body, dict) else {}
    others = [d.via_nginx("after-kill-%d" % i) for i in range(4)]
    t.ok("kill -9 %s: 4 new clients through nginx all get connected" % victim,
         all(x.id for x in others), repr([x.id for x in others]))
    t.eq("kill -9 %s: nginx sent them to the live brokers" % victim,
         sorted(d.established(b) for b in ("b1", "b3")), [2, 2])
    for x in others[1:]:
        x.close()
    back = others[0]
    rows, j = settled(d, sid, lambda: back.join(sid, since=first_reply, timeout=ANSWER_S))
    since_seq = next((r[1] for r in rows if r[0] == first_reply), None)
    after = [(r[0], r[1], r[2], r[3]) for r in rows if since_seq is not None and
             r[1] > since_seq]
    msgs = j.get("messages") or []
    t.eq("reconnected through nginx, join since: exactly what was stored after it "
         "(id, seq, role, content)",
         [(m.get("id"), m.get("seq"), m.get("role"), m.get("content")) for m in msgs], after)
    t.eq("reconnected, join since: the acknowledged messages among them",
         [m.get("id") for m in msgs if m.get("role") == "user"],
         [ack2["message"]["id"], posted.get("id")])
    t.eq("reconnected, join since: message_count", j.get("message_count"), len(rows))
    text = "after the failover"
    back.chat(text, timeout=ANSWER_S)
    check_reply(t, "after the failover", back.read_reply(sid, timeout=ANSWER_S), sid, text=text)
    back.close()
    rows, _ = settled(d, sid, lambda: None)
    check_history(t, "after the failover", rows, [
        ("user", "before the crash", "-"), ("assistant", "before the crash", "complete"),
        ("user", "the last one b2 acknowledged", "-"),
        ("assistant", "the last one b2 acknowledged", "complete"),
        ("user", "posted while b2 is down", "-"),
        # a message posted through REST asks for no reply
        ("user", text, "-"), ("assistant", text, "complete")])
    # back on its host, same port and notify socket
    t0 = time.monotonic()
    d.start_broker(victim, tmpdir=old.tmpdir)
    t.diag("%s restarted in %.1f s" % (victim, time.monotonic() - t0))
    c = d.direct(victim, "b2-again")
    rows, j = settled(d, sid, lambda: c.join(sid, since=0, timeout=ANSWER_S))
    t.eq("%s restarted: serves the session, the whole history replayed" % victim,
         [(m.get("id"), m.get("seq")) for m in j.get("messages") or []],
         [(r[0], r[1]) for r in rows])
    c.close()
    return sid


def check_host_cut(t, d):
    """b3's host cut off the network (its link down: no refusal, only silence): new
    WebSockets through nginx still connect, after nginx's proxy_connect_timeout (5 s) on
    b3 and the next server; with the link back b3 answers again."""
    victim = "b3"
    d.topo.link_down(victim)
    try:
        t0 = time.monotonic()
        cs = [d.via_nginx("cut-%d" % i) for i in range(3)]
        took = time.monotonic() - t0
        t.ok("%s cut off: 3 new clients through nginx all get connected" % victim,
             all(c.id for c in cs), repr([c.id for c in cs]))
        t.diag("3 connections through nginx with %s cut off: %.1f s" % (victim, took))
        t.eq("%s cut off: none of them on it" % victim, d.established(victim), 0)
        for c in cs:
            c.close()
    finally:
        d.topo.link_up(victim)
        up_at = time.monotonic()
    c = d.direct(victim, "b3-back")
    t.ok("%s back on the network: answers on its own address" % victim, c.ping_ok())
    c.close()
    # its link to Redis timed out while cut off (Redis may still hold the old one, which
    # it learns is gone only when it next writes to it); it reconnects every 500 ms
    t.ok("%s back on the network: listens on Redis again (a subscriber connection from it, "
         "made since)" % victim,
         wait(lambda: d.new_subscriber(victim, time.monotonic() - up_at), RELAY_S))



# ---------------------------------------------------------------- the cross-broker relay

def take_added(c, n, timeout=RELAY_S):
    """The next n message_added frames c receives, in order."""
    return [c.expect(type="session_update", update_type="message_added", timeout=timeout)
            for _ in range(n)]


def seq_ok(t, name, frames):
    """message_added frames: seq strictly increasing, no message twice."""
    seqs = [f["message"].get("seq") for f in frames]
    ids = [f["message"].get("id") for f in frames]
    t.ok("%s: seq strictly increasing" % name,
         all(type(s) is int for s in seqs) and all(a < b for a, b in zip(seqs, seqs[1:])),
         repr(seqs))
    t.eq("%s: no message twice" % name, len(set(ids)), len(ids))


def same_everywhere(t, name, per_client):
    """per_client {client name: [frames]}: every client got exactly the same frames (as
    JSON values, field by field), the first client's being the reference."""
    names = list(per_client)
    ref = per_client[names[0]]
    for n in names[1:]:
        t.ok("%s: %s saw exactly what %s saw" % (name, n, names[0]),
             strict_equal(per_client[n], ref),
             "%s: %r vs %r" % (n, per_client[n][:3], ref[:3]))


def relay_identical_sequences(t, d, on=BROKERS):
    """Clients on b1, b2, b3 in one session: presence, typing, every message_added (seq in
    order, none twice), the streamed replies and a REST post are the same for all."""
    cs = [d.direct(b, "m%d-%s" % (i, b)) for i, b in enumerate(on, 1)]
    a = cs[0]
    sid = a.create_session(title="across brokers", timeout=ANSWER_S)
    for i, c in enumerate(cs[1:], 1):
        j = c.join(sid, timeout=ANSWER_S)
        t.eq("relay: %s joins: clients counts every broker's members" % c.name,
             j.get("clients"), i + 1)
        for x in cs[:i]:
            try:
                ev = x.expect(type="session_update", update_type="user_joined",
                              connection_id=c.id, timeout=RELAY_S)
            except parley.ExpectError:
                with d.redis.client() as rc:
                    t.diag("redis: numsub %r; clients %r" % (
                        rc.command("PUBSUB", "NUMSUB", "parley:0:s:" + sid, "parley:0:all"),
                        rc.command("CLIENT", "LIST")))
                raise
            t.eq("relay: %s sees %s join (clients)" % (x.name, c.name), ev.get("clients"), i + 1)
    a.send({"type": "typing_start"})
    for x in cs[1:]:
        ev = x.expect(type="session_update", update_type="user_typing", connection_id=a.id,
                      timeout=RELAY_S)
        t.eq("relay: %s sees %s typing" % (x.name, a.name), ev.get("typing"), True)
    a.send({"type": "typing_stop"})
    for x in cs[1:]:
        x.expect(type="session_update", update_type="user_typing", connection_id=a.id,
                 typing=False, timeout=RELAY_S)
    added = {c.name: [] for c in cs}
    replies = {c.name: [] for c in cs}
    texts = []
    for rnd in range(2):
        for c in cs:
            text = "round %d from %s, word by word" % (rnd, c.name)
            texts.append(text)
            c.send({"type": "chat", "message": text, "client_msg_id": "%s-%d" % (c.name, rnd)})
            for x in cs:
                added[x.name] += take_added(x, 1)
                frames = x.read_reply(sid, timeout=ANSWER_S + RELAY_S)
                check_reply(t, "relay: reply to %r seen by %s" % (text, x.name), frames, sid,
                            text=text)
                replies[x.name].append(frames)
    r = d.http("POST", "/sessions/%s/messages" % sid, {"content": "posted through REST"})
    t.eq("relay: REST post through nginx: 201", r.status, 201)
    for x in cs:
        added[x.name] += take_added(x, 1)
    for x in cs:
        seq_ok(t, "relay: %s" % x.name, added[x.name])
        t.eq("relay: %s got every message, in order" % x.name,
             [f["message"].get("content") for f in added[x.name]],
             texts + ["posted through REST"])
    same_everywhere(t, "relay: message_added", added)
    # the reply frames are the same but for nothing: response ids, chunks, message ids
    same_everywhere(t, "relay: streamed replies", replies)
    rows = d.stored(sid)
    t.eq("relay: seq 1..n in PostgreSQL, no gap", [r[1] for r in rows],
         list(range(1, len(rows) + 1)))
    by_id = {r[0]: r[1] for r in rows}
    got = sorted([f["message"]["seq"] for f in added[cs[0].name]] +
                 [by_id.get(fr[-1]["message_id"]) for fr in replies[cs[0].name]])
    t.eq("relay: the messages announced (user) and completed (assistant) are every seq",
         got, [r[1] for r in rows])
    r = d.http("GET", "/health")
    names = set()

    def strings(v):
        if isinstance(v, str):
            names.add(v)
        elif isinstance(v, dict):
            for x in v.values():
                strings(x)
        elif isinstance(v, list):
            for x in v:
                strings(x)
    strings(r.body)
    t.ok("relay: /health lists the live brokers (node ids)", set(on) <= names,
         json.dumps(r.body)[:400])
    for c in cs:
        c.close()
    return sid


def relay_reply_once(t, d, on=BROKERS):
    """Each reply is generated once, by one broker (SPEC 8): one that streams for longer
    than the brokers' reconcile pass (2 s) too; the members on every broker watch that one
    reply and no other."""
    cs = [d.direct(b, "once%d-%s" % (i, b)) for i, b in enumerate(on, 1)]
    sid = cs[0].create_session(timeout=ANSWER_S)
    for c in cs[1:]:
        c.join(sid, timeout=ANSWER_S)
    text = " ".join("once%03d" % i for i in range(150))  # 3 s of echo at 20 ms a word
    cs[0].chat(text, timeout=ANSWER_S)
    for c in cs:
        check_reply(t, "reply once: seen by %s" % c.name,
                    c.read_reply(sid, timeout=ANSWER_S + RELAY_S), sid, text=text)
    time.sleep(5.0)  # two more reconcile passes of every broker
    for c in cs:
        more = c.take_all(pred=lambda f: f.get("type") in ("status", "response_start") or (
            f.get("update_type") == "message_added" and
            (f.get("message") or {}).get("role") == "assistant"))
        t.eq("reply once: %s was shown no second reply" % c.name, more, [])
    rows = d.stored(sid)
    t.eq("reply once: stored once (role, content, status)", [r[2:] for r in rows],
         [("user", text, "-"), ("assistant", text, "complete")])
    for c in cs:
        c.close()


def relay_kill_mid_reply(t, d, victim="b1"):
    """kill -9 of the broker generating a reply: another finishes the job (SPEC 8)."""
    try:
        kill_mid_reply(t, d, victim)
    finally:
        if not d.brokers[victim].alive():
            d.start_broker(victim, tmpdir=d.brokers[victim].tmpdir)


def kill_mid_reply(t, d, victim):
    owner = d.direct(victim, "asker")
    others = [d.direct(b, "watch-" + b) for b in BROKERS if b != victim]
    sid = owner.create_session(timeout=ANSWER_S)
    for c in others:
        c.join(sid, timeout=ANSWER_S)
    text = " ".join("word%03d" % i for i in range(250))  # 5 s of echo at 20 ms a word
    ack = owner.chat(text, timeout=ANSWER_S)["message"]
    starts = [c.expect(type="response_start", session_id=sid, timeout=ANSWER_S + RELAY_S)
              for c in others]
    rid = starts[0]["response_id"]
    t.eq("kill mid-reply: the members on other brokers watch the same reply",
         [s["response_id"] for s in starts], [rid] * len(others))
    for c in others:
        for _ in range(3):
            c.expect(type="chunk", response_id=rid, timeout=RELAY_S)
    t.diag("kill mid-reply: the reply queue before the kill: %r" % (
        d.sql("select message_id, owner, lease_until from reply_queue;"),))
    t0 = time.monotonic()
    d.brokers[victim].kill9()
    dones = []
    for c in others:
        try:
            # what is left of the first reply, through its end (the rest waits in order)
            done = c.read_reply(sid, timeout=TAKEOVER_S)[-1]
        except parley.ExpectError:
            t.diag("kill mid-reply: the reply queue now: %r" % (
                d.sql("select message_id, owner, lease_until, clock_timestamp() from "
                      "reply_queue;"),))
            t.diag("kill mid-reply: stored: %r" % ([r[:3] + (r[3][:30],) + r[4:]
                                                    for r in d.stored(sid)],))
            raise
        took = time.monotonic() - t0
        dones.append(done)
        t.diag("%s: interrupted reply completed %.1f s after the kill" % (c.name, took))
        t.eq("kill mid-reply: %s gets response_complete interrupted: true (response_id)" %
             c.name, (done.get("interrupted"), done.get("response_id")), (True, rid))
    new = []
    for c in others:
        frames = c.read_reply(sid, timeout=TAKEOVER_S + ANSWER_S)
        new.append(frames)
        check_reply(t, "kill mid-reply: the new reply seen by %s" % c.name, frames, sid,
                    text=text)
        t.ok("kill mid-reply: %s: a new response id" % c.name,
             frames[1].get("response_id") != rid, repr(frames[1]))
    same_everywhere(t, "kill mid-reply: the new reply", {c.name: f for c, f in zip(others, new)})
    # the asker, whose broker died, comes back through nginx and asks for what it missed
    back = d.via_nginx("asker-back")
    j = back.join(sid, since=ack["id"], timeout=ANSWER_S)
    stored = d.stored(sid)
    seen = [ack["id"], dones[0].get("message_id"), new[0][-1].get("message_id")]
    t.eq("kill mid-reply: the asker back through nginx (join since its message) gets the "
         "replies, as stored (id, seq, role, content)",
         [(m.get("id"), m.get("seq"), m.get("role"), m.get("content"))
          for m in j.get("messages") or []], [r[:4] for r in stored if r[0] != ack["id"]])
    t.eq("kill mid-reply: ... its history is the one the members who never disconnected saw "
         "(message ids)", [ack["id"]] + [m.get("id") for m in j.get("messages") or []], seen)
    back.close()
    rows = [r for r in stored if r[2] == "assistant"]
    t.eq("kill mid-reply: stored replies: incomplete, then complete",
         [r[4] for r in rows], ["incomplete", "complete"])
    if len(rows) == 2:
        t.ok("kill mid-reply: the incomplete reply is a strict prefix of the text",
             rows[0][3] and text.startswith(rows[0][3]) and rows[0][3] != text,
             repr(rows[0][3][-40:]))
        t.eq("kill mid-reply: the complete reply is the whole text", rows[1][3], text)
    for c in others:
        c.close()


def relay_redis_down(t, d, on=("b1", "b2")):
    """Redis stopped for 5 s: live delivery across brokers pauses, then resumes from
    PostgreSQL with nothing missing, in seq order, nothing twice (SPEC 8)."""
    a = d.direct(on[0], "writer")
    b = d.direct(on[1], "reader")
    sid = a.create_session(timeout=ANSWER_S)
    b.join(sid, timeout=ANSWER_S)
    a.expect(type="session_update", update_type="user_joined", connection_id=b.id,
             timeout=RELAY_S)
    acks = [a.chat("before the outage", timeout=ANSWER_S)]
    a.read_reply(sid, timeout=ANSWER_S)
    pause = {}
    th = threading.Thread(target=lambda: pause.update(r=d.redis.pause(5.0)), daemon=True)
    th.start()
    t.ok("redis down: stopped", wait(lambda: not d.redis.alive(), 10))
    for i in range(3):
        acks.append(a.chat("during the outage %d" % i, timeout=ANSWER_S))
        a.read_reply(sid, timeout=ANSWER_S)
    th.join(60)
    t.ok("redis down: started again after about 5 s", d.redis.alive() and
         pause.get("r", (None, 0))[1] >= 5.0, repr(pause))
    # the replies made while Redis was down reach b from PostgreSQL as message_added
    # (their chunks and response_complete never crossed): user messages and replies mixed
    got = []
    deadline = time.monotonic() + RELAY_S
    while sum(1 for f in got if f["message"].get("role") == "user") < 4 and \
            time.monotonic() < deadline:
        got += take_added(b, 1, timeout=max(0.1, deadline - time.monotonic()))
    got += b.quiet(3.0, type="session_update", update_type="message_added")
    seq_ok(t, "redis down: the member on %s" % on[1], got)
    t.eq("redis down: the member on %s got every acknowledged message once, in order" % on[1],
         [f["message"] for f in got if f["message"].get("role") == "user"],
         [x["message"] for x in acks])
    rows = {r[0]: r for r in d.stored(sid)}
    t.ok("redis down: what else it got are the stored replies",
         all(rows.get(f["message"]["id"], (0, 0, ""))[2] == "assistant"
             for f in got if f["message"].get("role") != "user"), repr(got)[:300])
    ack = b.chat("after the outage", timeout=ANSWER_S)
    seen = a.expect(type="session_update", update_type="message_added", timeout=RELAY_S)
    t.ok("redis down: live delivery is back (b -> a)", strict_equal(seen, ack), repr(seen))
    rows = d.stored(sid)
    t.eq("redis down: every acknowledged message stored, seq 1..n", [r[1] for r in rows],
         list(range(1, len(rows) + 1)))
    a.close()
    b.close()


def relay_late_broker(t, d, sid):
    """A broker started later (host b4, not behind nginx) catches up: the whole history on
    join, then the live events of the others, and /health lists it."""
    host = "b4"
    if host not in d.topo.hosts:
        d.topo.add_host(host)
    late = d.start_broker("b4", host=host)
    try:
        late_catches_up(t, d, sid)
    finally:
        late.stop()
        del d.brokers["b4"]


def late_catches_up(t, d, sid):
    c = d.direct("b4", "late")
    j = c.join(sid, since=0, timeout=ANSWER_S)
    rows = d.stored(sid)
    t.eq("late broker: join since=0 replays the stored history (id, seq)",
         [(m.get("id"), m.get("seq")) for m in j.get("messages") or []],
         [(r[0], r[1]) for r in rows])
    a = d.direct("b1", "early")
    a.join(sid, timeout=ANSWER_S)
    text = "hello to the late broker"
    ack = a.chat(text, timeout=ANSWER_S)
    seen = c.expect(type="session_update", update_type="message_added", timeout=RELAY_S)
    t.eq("late broker: a chat on b1 reaches its member (message, seq next)",
         (seen.get("message"), seen["message"].get("seq")), (ack["message"], rows[-1][1] + 1))
    check_reply(t, "late broker: the reply streams to its member",
                c.read_reply(sid, timeout=ANSWER_S + RELAY_S), sid, text=text)
    r = wait(lambda: "b4" in json.dumps(d.http("GET", "/health").body), RELAY_S)
    t.ok("late broker: /health lists it", r)
    a.close()
    c.close()


def relay_checks(t, d, sid):
    names = ["relay: identical sequences on three brokers", "relay: each reply generated once",
             "relay: kill -9 mid-reply", "relay: Redis stopped for 5 s",
             "relay: a broker started later catches up"]
    with t.section(names[0]):
        sid = relay_identical_sequences(t, d) or sid
    with t.section(names[1]):
        relay_reply_once(t, d)
    with t.section(names[2]):
        relay_kill_mid_reply(t, d)
    with t.section(names[3]):
        relay_redis_down(t, d)
    with t.section(names[4]):
        relay_late_broker(t, d, sid)


# ---------------------------------------------------------------- main

def main(t):
    why = netns.unavailable()
    if why:
        t.skip("topology: three brokers, REST, PostgreSQL and Redis behind nginx", why)
        return
    t0 = time.monotonic()
    d = Deployment(t)
    try:
        d.start()
        with t.section("every process is up"):
            check_up(t, d)
        with t.section("REST through nginx"):
            check_rest_through_nginx(t, d)
        with t.section("WebSockets through nginx and direct"):
            check_ws_through_nginx(t, d)
        sid = None
        with t.section("a chat stored in PostgreSQL"):
            sid = check_chat_stored(t, d)
        with t.section("kill -9 of a broker"):
            check_broker_kill(t, d)
        with t.section("a broker host cut off"):
            check_host_cut(t, d)
        relay_checks(t, d, sid)
    finally:
        d.stop()
        t.diag("topology scenario took %.1f s" % (time.monotonic() - t0))


if __name__ == "__main__":
    parley.run(main)
