"""Live figures per broker node (SPEC 8): one REST and two brokers (--node-id b1, b2) over one
database. /health lists the live brokers with their own connections and sums them in
broker.connections; /stats websocket_connections sums them and `brokers` counts them;
GET /sessions `clients` counts a session's members at both; /metrics has a gauge per node.
A broker killed with -9 leaves the list within a few seconds and its members stop
counting; one restarted under the same name starts from nothing; one stopped cleanly
leaves at once. Without --node-id a broker is HOSTNAME:PORT, the port it really listens on
(also with --port 0). A bad --node-id exits 2 saying what a node id may be."""

import os
import re
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import TS_RE, Broker, Rest, free_port, run_cli, strict_equal  # noqa: E402

# wide: a loaded machine, ASan; the figures themselves are at most about 1 s old
DEADLINE = 20.0
ALLOWED = "A-Z a-z 0-9 . _ : -"


def poll(fn, want, timeout=DEADLINE):
    """Calls fn() until it returns want (strictly equal) or timeout; returns the last value
    and how long it took."""
    start = time.monotonic()
    while True:
        got = fn()
        if strict_equal(got, want) or time.monotonic() - start > timeout:
            return got, time.monotonic() - start
        time.sleep(0.1)


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def brokers(rest):
    """/health brokers as [(node_id, connections)]."""
    body = rest.get("/health").body
    return [(x.get("node_id"), x.get("connections")) for x in body.get("brokers") or []]


def figures(rest):
    """The sums: (/health broker, /stats websocket_connections, brokers, active_sessions)."""
    h = rest.get("/health").body
    s = rest.get("/stats").body
    return (h.get("broker"), s.get("websocket_connections"), s.get("brokers"),
            s.get("active_sessions"))


def clients(rest, sid):
    """(GET /sessions clients, GET /sessions/{id} clients) of session sid."""
    listed = "missing"
    for s in rest.get("/sessions?limit=500").body.get("sessions") or []:
        if s.get("session_id") == sid:
            listed = s.get("clients")
    return listed, rest.get("/sessions/%s" % sid).body.get("clients")


def metrics(rest):
    """The /metrics samples as {name or name{labels}: value}."""
    values = {}
    for line in rest.get("/metrics").body.decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            v = float(value)
            values[name] = int(v) if v.is_integer() else v
    return values


def log_text(p):
    try:
        with open(p.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class Port0Broker(Broker):
    """A broker started with --port 0: ready once its log names the port it listens on
    (then self.port is that port and self.node_id the node id the log names)."""

    def probe(self):
        m = re.search(r"node (\S+) listening on ws://127\.0\.0\.1:(\d+)/ws", log_text(self))
        if not m:
            raise ValueError("no listening line yet")
        self.node_id, self.port = m.group(1), int(m.group(2))
        Broker.probe(self)


def test_two_brokers(t):
    rest = Rest(t, name="rest")
    tmp = rest.tmpdir
    b1 = Broker(t, tmpdir=tmp, port=rest.ws_port, llm="none", name="broker-b1",
                flags={"--node-id": "b1"})
    b2 = Broker(t, tmpdir=tmp, llm="none", name="broker-b2",
                flags={"--node-id": "b2", "--notify-socket": os.path.join(tmp, "b2.sock")})
    for b, name in ((b1, "b1"), (b2, "b2")):
        t.match("%s: the startup line names the node and its port" % name, log_text(b),
                r"node %s listening on ws://127\.0\.0\.1:%d/ws" % (name, b.port))

    got, _ = poll(lambda: brokers(rest), [("b1", 0), ("b2", 0)])
    t.eq("/health brokers: b1 and b2, by node_id, no connections", got, [("b1", 0), ("b2", 0)])
    h = rest.get("/health").body
    t.eq("/health: healthy, broker {up: true, connections: 0}",
         (h.get("status"), h.get("broker")), ("healthy", {"up": True, "connections": 0}))
    for x in h.get("brokers") or []:
        t.keys("/health brokers[%s]: node_id, connections, started_at, last_seen_ms"
               % x.get("node_id"), x, {"node_id", "connections", "started_at", "last_seen_ms"})
        t.match("/health brokers[%s]: started_at is an ISO time" % x.get("node_id"),
                x.get("started_at"), TS_RE)
        t.ok("/health brokers[%s]: last_seen_ms an int in [0, 3000]" % x.get("node_id"),
             type(x.get("last_seen_ms")) is int and 0 <= x["last_seen_ms"] <= 3000,
             repr(x.get("last_seen_ms")))

    # b1: a1, a2 in S; b2: c1, c2 in S, c3 in T
    s_id = rest.new_session(title="shared")
    t_id = rest.new_session(title="b2 only")
    a1, a2 = connect(b1, "a1"), connect(b1, "a2")
    c1, c2, c3 = connect(b2, "c1"), connect(b2, "c2"), connect(b2, "c3")
    for c in (a1, a2, c1, c2):
        c.join(s_id)
    c3.join(t_id)

    got, _ = poll(lambda: brokers(rest), [("b1", 2), ("b2", 3)])
    t.eq("/health brokers: b1 2 connections, b2 3", got, [("b1", 2), ("b2", 3)])
    want = ({"up": True, "connections": 5}, 5, 2, 2)
    got, _ = poll(lambda: figures(rest), want)
    t.eq("sums: broker.connections 5, websocket_connections 5, brokers 2, active_sessions 2",
         got, want)
    got, _ = poll(lambda: clients(rest, s_id), (4, 4))
    t.eq("shared session: clients 4 (2 at b1 + 2 at b2) in /sessions and /sessions/{id}",
         got, (4, 4))
    got, _ = poll(lambda: clients(rest, t_id), (1, 1))
    t.eq("b2's session: clients 1", got, (1, 1))
    m = metrics(rest)
    t.eq("/metrics: per-node connections and the sums",
         [m.get(k) for k in ('parley_broker_connections{node="b1"}',
                             'parley_broker_connections{node="b2"}', "parley_brokers",
                             "parley_websocket_connections", "parley_broker_up",
                             "parley_active_sessions")],
         [2, 3, 2, 5, 1, 2])
    t.ok("/metrics: last_seen_seconds per node",
         all(isinstance(m.get('parley_broker_last_seen_seconds{node="%s"}' % n), (int, float))
             for n in ("b1", "b2")), repr(m))

    # one member leaves at b2: only b2's share changes
    c2.close()
    got, _ = poll(lambda: (brokers(rest), clients(rest, s_id)), ([("b1", 2), ("b2", 2)], (3, 3)))
    t.eq("one member of b2 closes: b2 2 connections, shared session clients 3", got,
         ([("b1", 2), ("b2", 2)], (3, 3)))

    # kill -9 b2: it leaves the list within a few seconds and its members stop counting
    b2.kill9()
    want = ([("b1", 2)], (2, 2), (0, 0), ({"up": True, "connections": 2}, 2, 1, 1))
    got, took = poll(lambda: (brokers(rest), clients(rest, s_id), clients(rest, t_id),
                              figures(rest)), want)
    t.eq("b2 killed -9: only b1 listed; shared session clients 2, b2's session 0; sums 2",
         got, want)
    t.diag("b2 left the figures %.1f s after kill -9" % took)
    t.ok("b2 killed -9: gone from the figures within %d s" % DEADLINE, took <= DEADLINE,
         "%.1f s" % took)

    # b2 again under the same name: its old member counts do not come back
    b2.start()
    got, _ = poll(lambda: brokers(rest), [("b1", 2), ("b2", 0)])
    t.eq("b2 restarted: listed again with 0 connections", got, [("b1", 2), ("b2", 0)])
    t.eq("b2 restarted: its old members do not count", clients(rest, t_id), (0, 0))
    t.eq("b2 restarted: shared session clients 2 (b1's)", clients(rest, s_id), (2, 2))
    c4 = connect(b2, "c4")
    c4.join(s_id)
    got, _ = poll(lambda: clients(rest, s_id), (3, 3))
    t.eq("a member joins at the restarted b2: shared session clients 3", got, (3, 3))

    # a clean stop leaves the list at once (no waiting for the heartbeat to go stale)
    b1.stop()
    got, took = poll(lambda: brokers(rest), [("b2", 1)], timeout=5.0)
    t.eq("b1 stopped cleanly: only b2 listed", got, [("b2", 1)])
    t.ok("b1 stopped cleanly: gone within 2 s", took < 2.0, "%.1f s" % took)
    t.eq("b1 stopped: shared session clients 1", clients(rest, s_id), (1, 1))
    b2.stop()
    got, _ = poll(lambda: figures(rest), ({"up": False, "connections": 0}, 0, 0, 0), timeout=5.0)
    t.eq("both stopped: broker down, every sum 0", got,
         ({"up": False, "connections": 0}, 0, 0, 0))
    t.eq("both stopped: /health brokers []", rest.get("/health").body.get("brokers"), [])
    rest.stop()


def test_default_node_id(t):
    rest = Rest(t, name="rest-default")
    host = socket.gethostname()
    b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none", name="broker-default")
    want = "%s:%d" % (host, b.port)
    got, _ = poll(lambda: brokers(rest), [(want, 0)])
    t.eq("no --node-id: the node is HOSTNAME:PORT", got, [(want, 0)])
    t.ok("no --node-id: the startup line names it", "node %s listening" % want in log_text(b),
         log_text(b)[-400:])
    b.stop()

    z = Port0Broker(t, tmpdir=rest.tmpdir, llm="none", name="broker-port0",
                    flags={"--port": "0", "--notify-socket": os.path.join(rest.tmpdir, "z.sock")})
    t.ok("--port 0: a real port is listened on and named", z.port > 0, repr(z.port))
    t.eq("--port 0: the node is HOSTNAME:<the port it listens on>", z.node_id,
         "%s:%d" % (host, z.port))
    got, _ = poll(lambda: brokers(rest), [(z.node_id, 0)])
    t.eq("--port 0: /health lists it", got, [(z.node_id, 0)])
    z.stop()

    env_b = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none", name="broker-env",
                   env={"PARLEY_NODE_ID": "env-node.1"})
    got, _ = poll(lambda: brokers(rest), [("env-node.1", 0)])
    t.eq("PARLEY_NODE_ID names the node", got, [("env-node.1", 0)])
    env_b.stop()
    longest = "n" * 64
    b64 = Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, llm="none", name="broker-64",
                 flags={"--node-id": longest})
    got, _ = poll(lambda: brokers(rest), [(longest, 0)])
    t.eq("a 64-character node id is taken as it is", got, [(longest, 0)])
    b64.stop()
    rest.stop()


def test_bad_node_id(t):
    tmp = parley.make_tmpdir()
    db = parley.db_for(tmp)
    for bad, why in (("bad id", "a space"), ("b/1", "a slash"), ("", "empty"),
                     ("n" * 65, "65 characters"), ("nœud", "not ASCII")):
        code, out, err = run_cli("parley-broker", ["--db", db, "--port", str(free_port()),
                                                   "--notify-socket",
                                                   os.path.join(tmp, "bad.sock"),
                                                   "--node-id", bad])
        t.eq("--node-id %s: exit 2" % why, code, 2)
        t.ok("--node-id %s: the message says what is allowed" % why, ALLOWED in err, err)
    code, out, err = run_cli("parley-broker", ["--db", db, "--port", str(free_port()),
                                               "--notify-socket", os.path.join(tmp, "bad.sock")],
                             env={"PARLEY_NODE_ID": "no!"})
    t.eq("PARLEY_NODE_ID with a '!': exit 2", code, 2)
    t.ok("PARLEY_NODE_ID with a '!': the message says what is allowed", ALLOWED in err, err)


def main(t):
    with t.section("two brokers"):
        test_two_brokers(t)
    with t.section("default node id"):
        test_default_node_id(t)
    with t.section("bad node id"):
        test_bad_node_id(t)


if __name__ == "__main__":
    parley.run(main)
