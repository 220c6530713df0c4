"""Helpers for the `parley` client scenarios: the interactive client in a tmux pane.

Each Pane runs bin/parley in its own tmux server (a private -L socket), so capture-pane
gives the screen as a user sees it and send-keys types into it. The pane's shell prints the
client's exit status when it ends, and the pane stays (remain-on-exit); close() stops the tmux
server this script started, by pid. Standard library only, /usr/bin/python3.
"""

import os
import pwd
import re
import signal
import subprocess
import time

import parley

TMUX = "/usr/bin/tmux"


def services(t, **broker_kw):
    """A Rest and a Broker sharing one temporary database; returns (rest, broker)."""
    rest = parley.Rest(t)
    broker = parley.Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, **broker_kw)
    return rest, broker


def login_name():
    """The name bin/parley takes by default: getlogin(), else $USER, else the password entry
    (both processes share the login uid that getlogin() reads first)."""
    try:
        name = os.getlogin()
    except OSError:
        name = ""
    return (name or os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name)[:64]


def client_env(rest, broker, extra=None):
    env = {"PARLEY_WS_URL": broker.url, "PARLEY_REST_URL": "http://127.0.0.1:%d" % rest.port}
    env.update(extra or {})
    return env


class Pane:
    def __init__(self, t, env, args=(), name="parley", width=120, height=50):
        self.t = t
        self.name = name
        self.sock = "parley-test-%d-%s-%d" % (os.getpid(), name, parley.free_port())
        self.cwd = parley.make_tmpdir("parley-cli-")
        argv = [os.path.join(parley.BIN_DIR, "parley")] + list(args)
        e = parley._child_env(env)
        e.pop("DISPLAY", None)
        e.pop("WAYLAND_DISPLAY", None)
        e.pop("TMUX", None)
        e["TERM"] = "xterm-256color"
        self.env = e
        conf = os.path.join(self.cwd, "tmux.conf")
        with open(conf, "w") as f:
            f.write("set -g remain-on-exit on\nset -g history-limit 5000\n")
        cmd = [TMUX, "-L", self.sock, "-f", conf, "new-session", "-d", "-s", "main",
               "-x", str(width), "-y", str(height), "-c", self.cwd]
        for k, v in e.items():
            if k.startswith("PARLEY_") or k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "NO_COLOR"):
                cmd += ["-e", "%s=%s" % (k, v)]
        # the shell stays to print the client's exit status on screen
        shell = " ".join(_shq(a) for a in argv) + '; echo "[parley exited with status $?]"'
        subprocess.run(cmd + [shell], env=e, cwd=self.cwd, check=True, timeout=10)
        self.server_pid = int(self.tmux("display-message", "-p", "#{pid}").strip())

    def tmux(self, *args):
        p = subprocess.run([TMUX, "-L", self.sock] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self.env, timeout=10)
        return p.stdout.decode("utf-8", "replace")

    def screen(self, escapes=False):
        """The pane's text, scrollback included, trailing spaces and empty lines removed."""
        args = ["capture-pane", "-p", "-J", "-S", "-2000", "-t", "main"]
        if escapes:
            args.insert(2, "-e")
        text = self.tmux(*args)
        lines = [ln.rstrip() for ln in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def lines(self):
        return self.screen().splitlines()

    def type(self, text):
        """Types text (literally), without Enter."""
        self.tmux("send-keys", "-t", "main", "-l", text)

    def key(self, *keys):
        self.tmux("send-keys", "-t", "main", *keys)

    def line(self, text):
        self.type(text)
        self.key("Enter")

    def wait(self, regex, timeout=10.0, count=1):
        """Waits until the screen matches regex (at least count times); returns the match
        list, or None after timeout."""
        r = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = r.findall(self.screen())
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def expect(self, name, regex, timeout=10.0, count=1):
        """Reports whether the screen shows regex within timeout."""
        got = self.wait(regex, timeout, count)
        if not self.t.ok(name, got is not None, "no /%s/ (x%d) on screen:\n%s" % (
                regex, count, self.screen()[-3000:])):
            return None
        return got

    def dead_status(self, timeout=10.0):
        """The client's exit status once it has exited, else None."""
        got = self.wait(r"^\[parley exited with status (\d+)\]$", timeout)
        return int(got[0]) if got else None

    def session_id(self):
        m = re.findall(r"(?:created|joined) session ([0-9a-f]{16})", self.screen())
        return m[-1] if m else None

    def close(self):
        """Stops the tmux server this pane started (by pid)."""
        try:
            os.kill(self.server_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(self.server_pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        try:
            os.kill(self.server_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def quit(self, name):
        """/quit, then reports exit status 0."""
        self.line("/quit")
        self.t.eq("%s: /quit exits with status 0" % name, self.dead_status(), 0)


def _shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


def run_parley(args, env, stdin=None, timeout=20):
    """bin/parley args, to completion: (exit status, stdout, stderr)."""
    p = subprocess.run([os.path.join(parley.BIN_DIR, "parley")] + list(args),
                       input=stdin.encode() if stdin is not None else None,
                       stdin=None if stdin is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=parley._child_env(env), cwd=parley.make_tmpdir(), timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
