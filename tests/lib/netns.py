"""Multi-host tests on one machine: a topology of Linux network namespaces (SPEC 8).

    topo = netns.Topology()              # the switch (a namespace holding a bridge)
    topo.add_host("front")               # a namespace with eth0 = 10.77.X.N/24 on the switch
    topo.addr("front")                   # "10.77.X.N"
    p = topo.run("data", argv, stdout=f) # Popen of argv inside that host (own process group)
    topo.exec("data", argv)              # runs argv there to completion (CompletedProcess)
    topo.wrap("data", argv)              # ["ip", "netns", "exec", NS] + argv, for other runners
    s = topo.connect("front", addr, port)   # a TCP socket made inside front's namespace
    topo.http("front", addr, port, "GET", "/health")  # (status, headers, body) like Rest
    topo.ws_client("front", "ws://ADDR:PORT/ws")       # a parley.WsClient from front
    topo.link_down("b2"); topo.link_up("b2")         # cut a host off the switch, and back
    topo.on_stop(fn)                     # fn() runs first in stop_all (e.g. stop a cluster)
    topo.stop_all()                      # SIGTERM, then SIGKILL, each process group it
                                         # started; deletes every namespace it made

Names: every namespace is `pt<PID>-<X>-<host>` (the switch: `...-switch`), PID this
process's, so that parallel runs never collide; X (2..254) is the run's third octet, the
subnet 10.77.X.0/24. While the topology exists, the root namespace has a `prohibit` route
for that subnet (metric PID): a socket of the test process itself that was not made inside
a host (connect() below) is refused at once instead of leaving the machine towards the
default gateway, and a second run picks another X. Host N (in the order added) is
10.77.X.(10+N). Each host has loopback up and one veth pair: eth0 in the host, its peer
`h-<host>` in the switch namespace, enslaved to the bridge `br0`. The hosts have no
default route: nothing inside can reach anything but the other hosts of this topology.

The test process stays in the root namespace; connect() makes a socket inside a host's
namespace (a short-lived thread does setns(2) there, creates and connects it; the socket
keeps that namespace for its life), so clients "run on" a host without a subprocess.
Unix-domain sockets and files are shared by all namespaces (PostgreSQL's socket directory,
Redis's unixsocket, the brokers' notify sockets are reachable from the test directly).

Processes are started with start_new_session (each leads its own process group) and
stopped by that group (while its leader is not reaped) only, never by name. stop_all()
also runs at exit (atexit) and on SIGTERM (the runner's timeout: SIGTERM raises
SystemExit so that finally clauses and atexit run); when a namespace still holds
processes after that (e.g. a server that daemonized out of its group), those pids, found
with `ip netns pids` in namespaces this run made, get SIGKILL before the namespace is
deleted.

unavailable() says why a topology cannot be made here (not root, no `ip`, `ip netns add`
refused): the scenario then reports its checks skipped with that reason. Standard library
only, /usr/bin/python3. The second half of this file runs Parley's processes on hosts:
NsRest, NsBroker, NsNginx (parley.Rest/Broker and deploy.WebServer started inside a host,
probed and queried from a client host).
"""

import atexit
import ctypes
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import deploy
import parley
import pgcluster

IP = shutil.which("ip") or "/usr/sbin/ip"
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
SUBNET_BASE = "10.77"
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")  # h-<host> must fit IFNAMSIZ (15)
NAME_RE = re.compile(r"^pt(\d+)-(\d+)-([a-z0-9]+)$")

_libc = None


class Unavailable(RuntimeError):
    """The machine cannot make network namespaces (str(e) says why)."""


def _run_ip(args, check=True, timeout=30):
    p = subprocess.run([IP] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("ip %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                   p.stderr.decode("utf-8", "replace").strip()))
    return p


def unavailable():
    """None when network namespaces can be made here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "needs root for ip netns (running as uid %d)" % os.geteuid()
    if not os.access(IP, os.X_OK):
        return "no ip command (apt-get install iproute2)"
    name = "pt%d-probe" % os.getpid()
    p = _run_ip(["netns", "add", name], check=False)
    if p.returncode != 0:
        return "ip netns add refused: %s" % p.stderr.decode("utf-8", "replace").strip()
    try:
        q = _run_ip(["-n", name, "link", "add", "br0", "type", "bridge"], check=False)
        if q.returncode != 0:
            return "no Linux bridge in a namespace: %s" % q.stderr.decode(
                "utf-8", "replace").strip()
        try:
            _libc_setns_check(name)
        except OSError as e:
            return "setns(2) into a namespace failed: %s" % e
    finally:
        _run_ip(["netns", "del", name], check=False)
    return None


def _libc_setns(fd):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: %s" % os.strerror(e))


def in_netns(ns_name, fn, *args):
    """fn(*args) run in a thread that has entered network namespace ns_name; its result
    (or its exception, raised here). Sockets fn creates belong to that namespace."""
    out = {}

    def body():
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns_name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _libc_setns(fd)
            finally:
                os.close(fd)
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    th = threading.Thread(target=body, name="netns-" + ns_name, daemon=True)
    th.start()
    th.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _libc_setns_check(ns_name):
    in_netns(ns_name, lambda: None)


class NsHTTPConnection(http.client.HTTPConnection):
    """http.client.HTTPConnection whose socket is made inside a topology host."""

    def __init__(self, topo, from_host, host, port, timeout=10):
        http.client.HTTPConnection.__init__(self, host, port, timeout=timeout)
        self._topo = topo
        self._from = from_host

    def connect(self):
        self.sock = self._topo.connect(self._from, self.host, self.port, self.timeout)


class Host:
    def __init__(self, name, ns, addr, index):
        self.name = name
        self.ns = ns
        self.addr = addr
        self.index = index
        self.link = "h-" + name  # the switch's end of the veth pair
        self.up = True

    def __repr__(self):
        return "Host(%s, %s, %s)" % (self.name, self.ns, self.addr)


class Topology:
    """Namespaces on one switch. Raises Unavailable from the constructor when namespaces
    cannot be made (check unavailable() first for a skip)."""

    def __init__(self, hosts=(), log=None):
        why = unavailable()
        if why:
            raise Unavailable(why)
        self.pid = os.getpid()
        self.log = log or (lambda msg: None)
        self.hosts = {}
        self._procs = []       # every Popen run() started (each leads a process group)
        self._namespaces = []  # made by us, in order (deleted in reverse)
        self._stoppers = []    # on_stop callbacks
        self._stopped = False
        self._route = None
        self._sweep_stale()
        self.third = self._claim_subnet()
        self.subnet = "%s.%d.0/24" % (SUBNET_BASE, self.third)
        self.prefix = "pt%d-%d-" % (self.pid, self.third)
        atexit.register(self.stop_all)
        self._install_sigterm()
        try:
            self.switch = self._add_ns("switch")
            _run_ip(["-n", self.switch, "link", "add", "br0", "type", "bridge"])
            _run_ip(["-n", self.switch, "link", "set", "br0", "up"])
            for h in hosts:
                self.add_host(h)
        except BaseException:
            self.stop_all()
            raise

    # ---- setup
    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            def on_term(signum, frame):
                raise SystemExit(128 + signum)
            signal.signal(signal.SIGTERM, on_term)

    def _sweep_stale(self):
        """Removes what earlier runs of these helpers left when they were SIGKILLed: the
        prohibit routes and the namespaces of a pid that is gone (a namespace only while
        no process is left in it)."""
        p = _run_ip(["route", "show", "type", "prohibit"], check=False)
        for line in p.stdout.decode().splitlines():
            m = re.match(r"^prohibit (%s\.\d+\.0/24) .*metric (\d+)" % re.escape(SUBNET_BASE),
                         line)
            if m and not pgcluster.pid_alive(int(m.group(2))):
                _run_ip(["route", "del", "prohibit", m.group(1), "metric", m.group(2)],
                        check=False)
        try:
            names = os.listdir(NETNS_DIR)
        except OSError:
            names = []
        for n in names:
            m = NAME_RE.match(n)
            if not m or pgcluster.pid_alive(int(m.group(1))):
                continue
            pids = _run_ip(["netns", "pids", n], check=False).stdout.split()
            if not pids:
                _run_ip(["netns", "del", n], check=False)

    def _claim_subnet(self):
        """A third octet no live run holds: our prohibit route on 10.77.X.0/24 is the
        claim (one route per subnet, checked after adding)."""
        start = 2 + self.pid % 253
        for i in range(253):
            x = 2 + (start - 2 + i) % 253
            net = "%s.%d.0/24" % (SUBNET_BASE, x)
            shown = _run_ip(["route", "show", "table", "all", net], check=False).stdout
            if shown.strip():
                continue
            if _run_ip(["route", "add", "prohibit", net, "metric", str(self.pid)],
                       check=False).returncode != 0:
                continue
            mine = _run_ip(["route", "show", "table", "all", net], check=False).stdout
            if len(mine.strip().splitlines()) != 1:  # another run added one just now
                _run_ip(["route", "del", "prohibit", net, "metric", str(self.pid)],
                        check=False)
                continue
            self._route = net
            return x
        raise Unavailable("no free subnet %s.X.0/24 (routes in the way)" % SUBNET_BASE)

    def _add_ns(self, suffix):
        name = self.prefix + suffix
        _run_ip(["netns", "add", name])
        self._namespaces.append(name)
        _run_ip(["-n", name, "link", "set", "lo", "up"])
        return name

    def add_host(self, name):
        """A host on the switch: its namespace, eth0 with the next address, loopback up."""
        if not HOST_RE.match(name):
            raise ValueError("host name %r: 1-12 of a-z 0-9, a letter first" % name)
        if name in self.hosts or name == "switch":
            raise ValueError("host %r already exists" % name)
        index = len(self.hosts)
        if index > 200:
            raise ValueError("too many hosts")
        ns = self._add_ns(name)
        addr = "%s.%d.%d" % (SUBNET_BASE, self.third, 10 + index)
        host = Host(name, ns, addr, index)
        _run_ip(["-n", self.switch, "link", "add", host.link, "type", "veth", "peer", "name",
                 "eth0", "netns", ns])
        _run_ip(["-n", self.switch, "link", "set", host.link, "master", "br0", "up"])
        _run_ip(["-n", ns, "addr", "add", addr + "/24", "dev", "eth0"])
        _run_ip(["-n", ns, "link", "set", "eth0", "up"])
        self.hosts[name] = host
        self.log("host %s: namespace %s, address %s" % (name, ns, addr))
        return host

    # ---- lookups
    def host(self, name):
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError("no host %r in this topology (%s)" % (
                name, ", ".join(self.hosts))) from None

    def addr(self, name):
        return self.host(name).addr

    def ns(self, name):
        return self.host(name).ns

    def _own_addr(self, addr):
        """addr is loopback or an address of this topology (the only targets allowed)."""
        if addr.startswith("127.") or addr in ("localhost", "::1"):
            return True
        return any(h.addr == addr for h in self.hosts.values())

    # ---- processes
    def wrap(self, name, argv):
        """argv run inside host name: ip netns exec NS argv (ip execs argv, so the pid is
        argv's own)."""
        return [IP, "netns", "exec", self.ns(name)] + list(argv)

    def run(self, name, argv, **popen_kwargs):
        """Starts argv inside host name in a new session (its own process group); returns
        the Popen. stop_all() stops it (SIGTERM to the group, then SIGKILL)."""
        if self._stopped:
            raise RuntimeError("topology already stopped")
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        popen_kwargs["start_new_session"] = True
        p = subprocess.Popen(self.wrap(name, argv), **popen_kwargs)
        self._procs.append(p)
        return p

    def exec(self, name, argv, timeout=30, **run_kwargs):
        """Runs argv inside host name to completion: subprocess.CompletedProcess (stdout
        and stderr captured unless given)."""
        run_kwargs.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" not in run_kwargs and "capture_output" not in run_kwargs:
            run_kwargs["stdout"] = subprocess.PIPE
            run_kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.run(self.wrap(name, argv), timeout=timeout, **run_kwargs)

    def stop_process(self, p, timeout=10.0):
        """SIGTERM to p's process group, up to timeout, then SIGKILL. Its exit status."""
        return _stop_group(p, timeout)

    def kill9(self, p):
        """SIGKILL to p's process group (a crash). Its exit status."""
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return p.wait()

    # ---- the test's own sockets, made inside a host
    def connect(self, name, addr, port, timeout=5.0):
        """A TCP socket connected from host name to addr:port (an address of this topology
        or that host's own loopback): made inside that host's namespace."""
        if not self._own_addr(addr):
            raise ValueError("%s is not an address of this topology" % addr)
        return in_netns(self.ns(name), socket.create_connection, (addr, int(port)), timeout)

    def in_host(self, name, fn, *args):
        """fn(*args) inside host name's namespace (e.g. to bind a listening socket there)."""
        return in_netns(self.ns(name), fn, *args)

    def connector(self, name):
        """connect(addr, port, timeout) as seen from host name (for helpers that take one)."""
        return lambda addr, port, timeout=5.0: self.connect(name, addr, port, timeout)

    def http_connection(self, name, addr, port, timeout=10):
        return NsHTTPConnection(self, name, addr, port, timeout)

    def http(self, name, addr, port, method, path, body=None, headers=None, timeout=10,
             decode=True):
        """One HTTP request from host name on a fresh connection: (status, lowercased
        headers, JSON-decoded body or bytes), as parley.Rest.request."""
        target = _Target(self, name, addr, port)
        return parley.Rest.request(target, method, path, body=body, headers=headers,
                                   timeout=timeout, decode=decode)

    def ws_client(self, name, url, client_name="ws", timeout=10, **kw):
        """A parley.WsClient on url, its TCP connection made from host name."""
        u = urllib.parse.urlsplit(url)
        port = u.port or (443 if u.scheme == "wss" else 80)
        sock = self.connect(name, u.hostname, port, timeout)
        sock.settimeout(None)
        return parley.WsClient(url, name=client_name, timeout=timeout, sock=sock, **kw)

    # ---- faults
    def link_down(self, name):
        """Cuts host name off the switch (its veth peer goes down: no carrier, packets to
        and from it are dropped; its connections hang rather than close)."""
        h = self.host(name)
        _run_ip(["-n", self.switch, "link", "set", h.link, "down"])
        h.up = False

    def link_up(self, name):
        h = self.host(name)
        _run_ip(["-n", self.switch, "link", "set", h.link, "up"])
        h.up = True

    # ---- teardown
    def on_stop(self, fn):
        """fn() runs at the start of stop_all (last registered first), before the process
        groups are stopped: for servers that leave their group (pg_ctl's postmaster)."""
        self._stoppers.append(fn)

    def ns_pids(self, name_or_ns):
        ns = self.hosts[name_or_ns].ns if name_or_ns in self.hosts else name_or_ns
        out = _run_ip(["netns", "pids", ns], check=False).stdout.decode()
        return [int(x) for x in out.split() if x.isdigit()]

    def stop_all(self):
        """Stops everything this topology started and deletes its namespaces and route.
        Safe to call more than once; errors are logged, not raised."""
        if self._stopped:
            return
        self._stopped = True
        while self._stoppers:
            fn = self._stoppers.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self.log("on_stop %r: %s" % (fn, e))
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in live:
            if p.poll() is not None:
                continue
            try:  # only while the leader is not reaped: its pid cannot be anyone else's
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                self.log("pid %d did not die on SIGKILL" % p.pid)
        # what is left (children of a leader that exited, a server that left its group)
        # lives in our namespaces: found there by pid, below
        for ns in reversed(self._namespaces):
            left = self.ns_pids(ns)
            if left:
                self.log("namespace %s: SIGKILL to what is left in it: %s" % (ns, left))
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 5
                while self.ns_pids(ns) and time.monotonic() < deadline:
                    time.sleep(0.05)
            p = _run_ip(["netns", "del", ns], check=False)
            if p.returncode != 0:
                self.log("ip netns del %s: %s" % (ns, p.stderr.decode().strip()))
        del self._namespaces[:]
        if self._route:
            _run_ip(["route", "del", "prohibit", self._route, "metric", str(self.pid)],
                    check=False)
            self._route = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()
        return False


class _Target:
    """What parley.Rest.request needs of its self: port and _http()."""

    def __init__(self, topo, name, addr, port):
        self.topo, self.name, self.addr, self.port = topo, name, addr, port

    def _http(self, host, timeout):
        return NsHTTPConnection(self.topo, self.name, host or self.addr, self.port, timeout)


def _stop_group(p, timeout=10.0):
    if p.poll() is not None:
        return p.returncode
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return p.wait()


# ---------------------------------------------------------------- Parley on hosts

class _OnHost:
    """Mixin for parley.Rest and its subclasses: the process starts inside topology host
    `host` (topo.run), and probe() and request() connect from `client_host` (default: the
    process's own host) to its address."""

    def _place(self, topo, host, client_host):
        self.topo = topo
        self.host = host
        self.addr = topo.addr(host)
        self.client_host = client_host or host

    def _start_on(self, base, what, t, topo, host, flags, client_host, auth_flags, kw):
        """base.__init__ with --bind the host's address (flags win), the name
        WHAT@HOST, argv_extra auth_flags (default --insecure-no-auth); then start()."""
        self._place(topo, host, client_host)
        fl = {"--bind": self.addr}
        fl.update(flags or {})
        start = kw.pop("start", True)
        base.__init__(self, t, flags=fl, start=False, **kw)
        self.name = kw.get("name") or "%s@%s" % (what, host)
        self.argv_extra = list(INSECURE if auth_flags is None else auth_flags)
        if start:
            self.start()

    def _spawn(self, argv, **popen_kwargs):
        return self.topo.run(self.host, argv, **popen_kwargs)

    def _http(self, host, timeout):
        return NsHTTPConnection(self.topo, self.client_host, host or self.addr, self.port,
                                timeout)


INSECURE = ["--insecure-no-auth"]


class NsRest(_OnHost, parley.Rest):
    """parley-rest on a host, bound to its address with --insecure-no-auth (no API key:
    protected mode needs it off loopback; auth_flags replaces that). flags and the other
    keywords as parley.Rest (--db: e.g. a PostgreSQL URI over TCP)."""

    def __init__(self, t, topo, host, flags=None, client_host=None, auth_flags=None, **kw):
        self._start_on(parley.Rest, "parley-rest", t, topo, host, flags, client_host,
                       auth_flags, kw)

    @property
    def base_url(self):
        return "http://%s:%d" % (self.addr, self.port)


class NsBroker(_OnHost, parley.Broker):
    """parley-broker on a host, bound to its address with --insecure-no-auth (or
    auth_flags); ready when a WebSocket upgrade from client_host succeeds. client() opens
    a WsClient from client_host to its address."""

    def __init__(self, t, topo, host, flags=None, client_host=None, auth_flags=None, **kw):
        self._start_on(parley.Broker, "parley-broker", t, topo, host, flags, client_host,
                       auth_flags, kw)

    @property
    def url(self):
        return "ws://%s:%d/ws" % (self.addr, self.port)

    def probe(self):
        sock = self.topo.connect(self.client_host, self.addr, self.port, 2)
        sock, _ = parley.ws_handshake(self.port, host=self.addr, timeout=2, sock=sock)
        try:
            sock.sendall(parley.ws_frame(0x8, b"\x03\xe8"))  # close 1000
        except OSError:
            pass
        sock.close()

    def client(self, name="ws", from_host=None, **kw):
        return self.topo.ws_client(from_host or self.client_host, self.url, client_name=name,
                                   **kw)


class NsNginx(_OnHost, deploy.WebServer):
    """nginx on a host: deploy/TEMPLATE rendered with values (deploy.render: each @KEY@)
    and included from deploy.WebServer's small main config (pid, logs and temp files in
    tmpdir/nginx/); ready when GET /health through it answers (any status)."""

    def __init__(self, t, topo, host, tmpdir, template, values, port, client_host=None,
                 start=True, ready_timeout=20.0):
        self._place(topo, host, client_host)
        deploy.WebServer.__init__(self, t, "nginx", tmpdir, None, None, None, port=port,
                                  start=start, ready_timeout=ready_timeout,
                                  template=template, values=values, name="nginx@%s" % host)


def wait_for(pred, timeout, interval=0.1):
    """pred() until it is truthy (returned) or timeout passes (the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


__all__ = ["Topology", "Unavailable", "unavailable", "in_netns", "NsHTTPConnection",
           "NsRest", "NsBroker", "NsNginx", "wait_for"]
