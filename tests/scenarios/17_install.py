"""make install into a temporary DESTDIR (PREFIX /usr/local), from this pass's build: the
exact list of files (programs, www/, man pages, units rendered for the prefix, example
config, README, the install list), the installed programs answer --version and --help,
the rendered units pass systemd-analyze verify, parley-rest started from its installed
path serves /demo from PREFIX/share/parley/www with no --www-dir, and make uninstall
leaves no Parley file behind."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import BIN_DIR, ROOT, make_tmpdir  # noqa: E402

PREFIX = "/usr/local"
UNITS = ["parley-rest.service", "parley-broker.service", "parley-fcgi.service",
         "parley-fcgi.socket"]


def version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        return re.search(r"(?m)^VERSION := (\S+)$", f.read()).group(1)


def make(*args):
    r = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT,
                        "INSTALL_FROM=" + BIN_DIR] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                       env=parley._child_env(None))
    return r.returncode, r.stdout.decode("utf-8", "replace")


def files_under(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add("/" + os.path.relpath(os.path.join(d, n), root))
    return out


def expected_files():
    www = set()
    for d, _, names in os.walk(os.path.join(ROOT, "www")):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), os.path.join(ROOT, "www"))
            www.add(PREFIX + "/share/parley/www/" + rel)
    return www | {
        PREFIX + "/bin/parley",
        PREFIX + "/sbin/parley-rest", PREFIX + "/sbin/parley-broker",
        PREFIX + "/sbin/parley-fcgi",
        PREFIX + "/share/man/man8/parley-rest.8", PREFIX + "/share/man/man8/parley-broker.8",
        PREFIX + "/share/man/man8/parley-fcgi.8", PREFIX + "/share/man/man1/parley.1",
        PREFIX + "/share/doc/parley/examples/parley.env",
        PREFIX + "/share/doc/parley/README.md",
        PREFIX + "/share/parley/installed-files",
    } | {PREFIX + "/lib/systemd/system/" + u for u in UNITS}


class InstalledRest(parley.Rest):
    """parley-rest from the installed path, with no --www-dir."""

    def __init__(self, t, exe, **kw):
        self.exe = exe
        parley.Rest.__init__(self, t, **kw)

    def argv(self):
        argv = parley.Rest.argv(self)
        argv[0] = self.exe
        return argv


def main(t):
    dest = make_tmpdir("parley-destdir-")
    code, out = make("install", "DESTDIR=" + dest)
    t.eq("make install: exit 0", code, 0)
    if code:
        t.diag(out)
        return
    got = files_under(dest)
    want = expected_files()
    t.eq("make install: the files installed, no more, no fewer", sorted(got), sorted(want))
    with open(dest + PREFIX + "/share/parley/installed-files") as f:
        listed = set(f.read().split())
    t.eq("installed-files lists every installed file", sorted(listed), sorted(want))
    for path in sorted(got):
        mode = os.stat(dest + path).st_mode & 0o777
        want_mode = 0o755 if "/bin/" in path or "/sbin/" in path else 0o644
        if mode != want_mode:
            t.fail("mode of %s" % path, "%o, want %o" % (mode, want_mode))
            break
    else:
        t.ok("modes: 0755 programs, 0644 the rest", True)

    progs = [("bin", "parley"), ("sbin", "parley-rest"), ("sbin", "parley-broker"),
             ("sbin", "parley-fcgi")]
    for d, prog in progs:
        exe = os.path.join(dest + PREFIX, d, prog)
        r = subprocess.run([exe, "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, env=parley._child_env(None), cwd=dest)
        t.eq("%s --version" % prog, (r.returncode, r.stdout.decode()),
             (0, "%s %s\n" % (prog, version())))
        r = subprocess.run([exe, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, env=parley._child_env(None), cwd=dest)
        t.ok("%s --help: exit 0, the usage line" % prog,
             r.returncode == 0 and r.stdout.decode().startswith("Usage: %s " % prog),
             r.stdout[:200])

    # the units, rendered for the prefix (verified with the DESTDIR paths in place)
    paths = []
    for u in UNITS:
        with open(dest + PREFIX + "/lib/systemd/system/" + u) as f:
            text = f.read()
        if u.endswith(".service"):
            prog = u.split(".")[0]
            t.eq("%s: ExecStart is the installed program" % u,
                 re.findall(r"(?m)^ExecStart=(.*)$", text), [PREFIX + "/sbin/" + prog])
            t.ok("%s: a dynamic user, StateDirectory=parley" % u,
                 "\nDynamicUser=yes\n" in text and "\nStateDirectory=parley\n" in text, text)
        if u in ("parley-rest.service", "parley-fcgi.service"):
            t.ok("%s: PARLEY_WWW_DIR under the prefix" % u,
                 "Environment=PARLEY_WWW_DIR=%s/share/parley/www\n" % PREFIX in text, text)
        t.ok("%s: no /usr/local/bin left" % u, "/usr/local/bin/" not in text, text)
        p = os.path.join(make_tmpdir(), u)
        with open(p, "w") as f:
            f.write(text.replace(PREFIX + "/sbin/", dest + PREFIX + "/sbin/"))
        paths.append(p)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + paths,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    t.eq("systemd-analyze verify of the installed units: clean",
         (r.returncode, r.stdout.decode("utf-8", "replace").strip()), (0, ""))

    # parley-rest from the installed path finds its www/ by itself
    rest = InstalledRest(t, dest + PREFIX + "/sbin/parley-rest")
    resp = rest.get("/demo")
    t.eq("installed parley-rest: GET /demo 200", resp.status, 200)
    with open(os.path.join(ROOT, "www", "demo.html"), "rb") as f:
        t.eq("GET /demo is the installed demo.html", resp.body, f.read())
    t.eq("GET /docs 200", rest.get("/docs").status, 200)
    rest.stop()

    code, out = make("uninstall", "DESTDIR=" + dest)
    t.eq("make uninstall: exit 0", code, 0)
    t.eq("make uninstall: no file left", sorted(files_under(dest)), [])
    t.ok("make uninstall: share/parley and share/doc/parley gone",
         not os.path.exists(dest + PREFIX + "/share/parley")
         and not os.path.exists(dest + PREFIX + "/share/doc/parley"), out)
    code, out = make("uninstall", "DESTDIR=" + dest)
    t.eq("make uninstall again: exit 0 (nothing installed)", code, 0)


parley.run(main)
