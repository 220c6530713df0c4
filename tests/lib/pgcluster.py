"""A throwaway PostgreSQL cluster for the tests (SPEC 7). Standard library only, runs
under /usr/bin/python3.

    c = pgcluster.Cluster()          # nothing happens yet
    c.start()                        # initdb (first time), then pg_ctl start
    c.create_database("t_x")         # CREATE DATABASE
    c.uri("t_x")                     # postgresql:///t_x?host=SOCKDIR&user=postgres: for --db
    c.psql("t_x", "select 1")        # (exit code, output lines `|`-separated), like sql()
    c.restart("immediate")           # pg_ctl restart -m fast|smart|immediate
    c.stop(); c.start()              # a server that goes away and comes back
    c.destroy()                      # stops it (if running) and removes its directory

The cluster lives in one temporary directory: data/ (the data directory), sock/ (the
Unix socket: listen_addresses is empty, no TCP at all) and server.log. Run as root (the
tests here are), initdb and pg_ctl run as the `postgres` user through `runuser -u postgres
--` and the directory is chowned to it; as anyone else they run as that user. The
superuser is always named postgres and local connections are trusted, so the URI is the
same either way. The server is stopped with pg_ctl stop, or failing that by the pid in
its postmaster.pid: never by process name.

Settings are for tests on a small shared machine: fsync and full_page_writes are off (the
processes the tests kill are ours, never the OS, and an OS crash loses only this scratch
cluster), but synchronous_commit stays on, so that a server killed at once (restart -m
immediate) keeps every commit it acknowledged, as in production. max_connections is 200
for scenarios running in parallel. The server's TimeZone is deliberately not UTC
(Asia/Kolkata, +05:30): a backend must render UTC timestamps whatever the server's zone.

A cluster the runner started for a PostgreSQL pass is found again with from_env() (the
PARLEY_TEST_PG_* variables env() returns).

Over TCP, for the multi-host tests (tests/lib/netns.py): Cluster(listen=ADDR,
hba=["host all all 10.77.X.0/24 trust"], wrap=lambda argv: topo.wrap("data", argv))
listens on ADDR:port as well as on its socket, lets the given networks in, and runs
initdb and pg_ctl through wrap (so the postmaster lives inside that host's network
namespace); tcp_uri(name) is then what processes on other hosts pass to --db. The socket
directory still works from the test process (a filesystem socket is not bound to a
network namespace), so psql(), create_database() and the URIs of uri() are unchanged.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

PG_BIN = "/usr/lib/postgresql/15/bin"
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs the server when we are root
DEFAULT_PORT = 5432   # the socket is in our own directory: no clash with another server

SETTINGS = {
    "listen_addresses": "''",
    "max_connections": "200",
    "superuser_reserved_connections": "3",
    "shared_buffers": "'32MB'",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "max_wal_size": "'512MB'",
    "checkpoint_timeout": "'15min'",
    "unix_socket_permissions": "0777",
    "timezone": "'Asia/Kolkata'",
    "lc_messages": "'C'",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",
}

NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# libpq settings from the caller's environment that would change where psql connects
_PG_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD",
           "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGSSLMODE", "PGTARGETSESSIONATTRS",
           "PGPASSFILE", "PGCONNECT_TIMEOUT", "PGAPPNAME")


class ClusterError(RuntimeError):
    pass


def _env():
    e = {k: v for k, v in os.environ.items() if k not in _PG_ENV}
    e["PGCONNECT_TIMEOUT"] = "10"
    e["LC_ALL"] = "C.UTF-8"
    return e


def is_pg_uri(db):
    return isinstance(db, str) and db.startswith(("postgres://", "postgresql://"))


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def psql_uri(uri, query, timeout=30, psql=None):
    """The query (one or more statements) through `psql -X -q -At -F'|'` on the database
    uri names: (exit code, output lines), with the error text appended when it fails, the
    shape of parley.sql() on the sqlite3 shell. Statements run one by one, as typed, and
    it stops at the first error (exit code 3)."""
    argv = [psql or os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-F", "|",
            "-v", "ON_ERROR_STOP=1", "-d", uri, "-f", "-"]
    try:
        p = subprocess.run(argv, input=query.encode("utf-8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, env=_env())
    except subprocess.TimeoutExpired:
        return None, ["psql: no answer within %s s" % timeout]
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        out += p.stderr.decode("utf-8", "replace")
    return p.returncode, out.splitlines()


def pid_alive(pid):
    """Whether process pid exists (signal 0; one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def uri_for(host, name, port=DEFAULT_PORT, user=SUPERUSER):
    """The libpq URI of database name on the server whose socket is in host."""
    u = "postgresql:///%s?host=%s&user=%s" % (name, host, user)
    if int(port) != DEFAULT_PORT:
        u += "&port=%d" % int(port)
    return u


class Cluster:
    def __init__(self, base=None, port=DEFAULT_PORT, settings=None, bindir=PG_BIN,
                 prefix="parley-pg-", listen=None, hba=(), wrap=None):
        self.bindir = bindir
        self.port = int(port)
        self.settings = dict(SETTINGS)
        self.settings.update(settings or {})
        self.listen = listen  # a TCP address to listen on as well (None: socket only)
        self.hba = list(hba)  # pg_hba.conf lines appended (e.g. host all all NET trust)
        self.wrap = wrap      # argv -> argv for initdb and pg_ctl (e.g. ip netns exec)
        if listen:
            self.settings["listen_addresses"] = "'%s'" % listen
        self.prefix = prefix
        self.base = base
        self.as_root = os.geteuid() == 0
        self.owned = False  # True when this object made (and so removes) the directory
        self._initialized = False

    # ---- paths
    @property
    def data(self):
        return os.path.join(self.base, "data")

    @property
    def host(self):
        """The socket directory: host= in a libpq URI, PARLEY_TEST_PG_HOST."""
        return os.path.join(self.base, "sock")

    @property
    def log_path(self):
        return os.path.join(self.base, "server.log")

    # ---- running the PostgreSQL programs
    def _argv(self, prog, *args):
        argv = [os.path.join(self.bindir, prog)] + list(args)
        if self.as_root:
            argv = ["runuser", "-u", OS_USER, "--"] + argv
        return self.wrap(argv) if self.wrap else argv

    def _run(self, prog, *args, timeout=120, check=True):
        argv = self._argv(prog, *args)
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout, env=_env(),
                               cwd=self.base)
        except subprocess.TimeoutExpired:
            raise ClusterError("%s timed out after %s s" % (" ".join(argv), timeout)) from None
        out = p.stdout.decode("utf-8", "replace")
        if check and p.returncode != 0:
            raise ClusterError("%s exited %d: %s\n--- server log ---\n%s" % (
                " ".join(argv), p.returncode, out.strip(), self.log_tail(20)))
        return p.returncode, out

    def _make_dir(self):
        if self.base is None:
            self.base = tempfile.mkdtemp(prefix=self.prefix)
            self.owned = True
        else:
            os.makedirs(self.base, exist_ok=True)
        os.makedirs(self.host, exist_ok=True)
        if self.as_root:
            import pwd
            pw = pwd.getpwnam(OS_USER)
            for d in (self.base, self.host):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o700)
        os.chmod(self.host, 0o700)

    def init(self):
        """initdb and the test settings (done by start() the first time)."""
        if self._initialized:
            return self
        if not os.access(os.path.join(self.bindir, "initdb"), os.X_OK):
            raise ClusterError("%s/initdb missing: install PostgreSQL 15 (make deps: "
                               "apt-get install postgresql)" % self.bindir)
        self._make_dir()
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                      "--locale=C.UTF-8", "--no-sync", "--no-instructions")
            conf = dict(self.settings)
            conf["unix_socket_directories"] = "'%s'" % self.host
            conf["port"] = str(self.port)
            with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
                f.write("\n# parley tests (tests/lib/pgcluster.py)\n")
                for k, v in conf.items():
                    f.write("%s = %s\n" % (k, v))
            if self.hba:
                with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
                    f.write("\n# parley tests (tests/lib/pgcluster.py)\n")
                    for line in self.hba:
                        f.write(line + "\n")
        self._initialized = True
        return self

    def start(self, timeout=60):
        """Starts the server (initdb first if needed); returns once it accepts connections."""
        self.init()
        self._run("pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", str(int(timeout)),
                  "-s", "start", timeout=timeout + 10)
        return self

    def stop(self, mode="fast", timeout=60):
        """pg_ctl stop -m mode (smart, fast, immediate); if that fails, the postmaster pid is
        sent SIGQUIT (immediate shutdown), then SIGKILL. Does nothing when it is not running."""
        if self.base is None or not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            return
        if not self.running():
            return
        code, out = self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t",
                              str(int(timeout)), "-s", "stop", timeout=timeout + 10, check=False)
        if code == 0 and not self.running():
            return
        pid = self.postmaster_pid()
        for sig, wait in ((signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
            if pid is None:
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)
        raise ClusterError("postmaster %s still running after pg_ctl stop, SIGQUIT and "
                           "SIGKILL (%s)" % (pid, out.strip()))

    def restart(self, mode="fast", timeout=60):
        """pg_ctl restart -m mode: `fast` rolls back what runs and ends the sessions,
        `immediate` is a crash (every process quits at once; recovery from the WAL at start)."""
        self.init()
        self._run("pg_ctl", "-D", self.data, "-l", self.log_path, "-m", mode, "-w", "-t",
                  str(int(timeout)), "-s", "restart", timeout=timeout + 10)
        return self

    def destroy(self):
        """Stops the server and removes the directory (if this object made it)."""
        try:
            self.stop()
        finally:
            if self.owned and self.base and not os.environ.get("PARLEY_KEEP_TMP"):
                shutil.rmtree(self.base, ignore_errors=True)

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def running(self):
        pid = self.postmaster_pid()
        return pid is not None and pid_alive(pid)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except (OSError, TypeError):
            return "(no server log)"
        return "\n".join(lines[-n:])

    # ---- databases
    def uri(self, name):
        """What to pass to --db for database name."""
        return uri_for(self.host, name, self.port)

    def tcp_uri(self, name, user=SUPERUSER):
        """--db for database name over TCP (needs listen): postgresql://USER@ADDR:PORT/NAME."""
        if not self.listen:
            raise ClusterError("this cluster listens on its socket only (no listen address)")
        host = "[%s]" % self.listen if ":" in self.listen else self.listen
        return "postgresql://%s@%s:%d/%s" % (user, host, self.port, name)

    def psql(self, name, query, timeout=30):
        """(exit code, output lines) of query on database name: see psql_uri."""
        return psql_uri(self.uri(name), query, timeout=timeout,
                        psql=os.path.join(self.bindir, "psql"))

    def create_database(self, name, fresh=True):
        """CREATE DATABASE name (with fresh, one left over by that name is dropped first).
        Returns its URI."""
        if not NAME_RE.match(name):
            raise ValueError("not a plain lowercase identifier: %r" % name)
        q = "CREATE DATABASE %s;" % name
        if fresh:
            q = "DROP DATABASE IF EXISTS %s WITH (FORCE);\n%s" % (name, q)
        code, lines = self.psql("postgres", q)
        if code != 0:
            raise ClusterError("CREATE DATABASE %s: %s" % (name, "\n".join(lines)))
        return self.uri(name)

    def drop_databases(self, names):
        """DROP DATABASE IF EXISTS ... WITH (FORCE) for each name (errors ignored)."""
        names = [n for n in names if NAME_RE.match(n)]
        if not names:
            return 0, []
        return self.psql("postgres", "".join("DROP DATABASE IF EXISTS %s WITH (FORCE);\n" % n
                                             for n in names))

    # ---- for the runner
    def env(self):
        """The environment a PostgreSQL pass exports to the scenarios."""
        return {"PARLEY_TEST_DB": "postgresql", "PARLEY_TEST_PG_HOST": self.host,
                "PARLEY_TEST_PG_PORT": str(self.port), "PARLEY_TEST_PG_USER": SUPERUSER,
                "PARLEY_TEST_PG_BIN": self.bindir, "PARLEY_TEST_PG_DATA": self.data}


def from_env(environ=None):
    """The cluster a PostgreSQL pass runs on (PARLEY_TEST_PG_HOST set by the runner), as a
    Cluster whose databases can be made and queried (not stopped: it is not ours); None
    outside such a pass."""
    e = os.environ if environ is None else environ
    host = e.get("PARLEY_TEST_PG_HOST")
    if not host:
        return None
    c = Cluster(base=os.path.dirname(host), port=int(e.get("PARLEY_TEST_PG_PORT") or
                                                    DEFAULT_PORT),
                bindir=e.get("PARLEY_TEST_PG_BIN") or PG_BIN)
    c._initialized = True
    return c
