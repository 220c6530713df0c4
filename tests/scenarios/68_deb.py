"""make deb: builds parley_VERSION_ARCH.deb from this pass's build (into a temporary
directory), checks its control fields, maintainer scripts and units (the "parley" system
user, units enabled but not started, StateDirectory=parley, the Debian paths), unpacks it
into a throwaway root with dpkg-deb -x, starts parley-rest and parley-broker from the
unpacked paths (temporary database, free ports), gets /demo with no --www-dir, chats once
through them (the echo assistant's reply), and runs lintian: no E: line."""

import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import BIN_DIR, ROOT, make_tmpdir  # noqa: E402

TOOLS = ["dpkg-deb", "dpkg-shlibdeps", "dpkg-gencontrol", "lintian", "strip"]


def version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        return re.search(r"(?m)^VERSION := (\S+)$", f.read()).group(1)


def run(argv, timeout=300):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, env=parley._child_env(None))
    return r.returncode, r.stdout.decode("utf-8", "replace")


class Unpacked(parley.Rest):
    """parley-rest from the unpacked package."""

    def __init__(self, t, exe, **kw):
        self.exe = exe
        parley.Rest.__init__(self, t, **kw)

    def argv(self):
        argv = parley.Rest.argv(self)
        argv[0] = self.exe
        return argv


class UnpackedBroker(parley.Broker):
    def __init__(self, t, exe, **kw):
        self.exe = exe
        parley.Broker.__init__(self, t, **kw)

    def argv(self):
        argv = parley.Broker.argv(self)
        argv[0] = self.exe
        return argv


def main(t):
    missing = [x for x in TOOLS if not shutil.which(x)]
    if missing:
        t.skip("make deb", "missing %s (make deps installs them)" % " ".join(missing))
        return
    tmp = make_tmpdir("parley-deb-")
    arch = run(["dpkg", "--print-architecture"])[1].strip()
    code, out = run(["make", "-s", "--no-print-directory", "-C", ROOT, "deb",
                     "INSTALL_FROM=" + BIN_DIR, "DEB_STAGE=" + os.path.join(tmp, "stage"),
                     "DEB_OUT=" + tmp])
    t.eq("make deb: exit 0", code, 0)
    deb = os.path.join(tmp, "parley_%s_%s.deb" % (version(), arch))
    if not t.ok("make deb: %s" % os.path.basename(deb), os.path.isfile(deb), out):
        return

    fields = {}
    for f in ("Package", "Version", "Architecture", "Depends", "Maintainer"):
        fields[f] = run(["dpkg-deb", "-f", deb, f])[1].strip()
    t.eq("control: Package", fields["Package"], "parley")
    t.eq("control: Version", fields["Version"], version())
    t.eq("control: Architecture", fields["Architecture"], arch)
    deps = [d.strip().split(" ")[0] for d in fields["Depends"].split(",")]
    for lib in ("libc6", "libmicrohttpd12", "libwebsockets17", "libjansson4", "libsqlite3-0",
                "libpq5", "libcurl4", "libfcgi0ldbl", "adduser"):
        t.ok("control: Depends on %s" % lib, lib in deps, fields["Depends"])

    root = os.path.join(tmp, "root")
    code, out = run(["dpkg-deb", "-x", deb, root])
    t.eq("dpkg-deb -x: exit 0", code, 0)
    ctl = os.path.join(tmp, "control")
    run(["dpkg-deb", "-e", deb, ctl])
    with open(os.path.join(ctl, "postinst")) as f:
        postinst = f.read()
    t.ok("postinst: makes the parley system user",
         re.search(r"adduser --system .*parley", postinst.replace("\\\n", " ")), postinst)
    t.ok("postinst: enables parley-rest and parley-broker",
         "deb-systemd-helper enable" in postinst and "parley-rest.service" in postinst
         and "parley-broker.service" in postinst, postinst)
    t.ok("postinst: starts nothing",
         not re.search(r"systemctl[^\n]*\bstart\b|deb-systemd-invoke[^\n]*start", postinst),
         postinst)
    for prog in ("parley-rest", "parley-broker", "parley-fcgi"):
        with open(os.path.join(root, "lib/systemd/system/%s.service" % prog)) as f:
            unit = f.read()
        t.eq("%s.service: ExecStart" % prog, re.findall(r"(?m)^ExecStart=(.*)$", unit),
             ["/usr/sbin/" + prog])
        t.ok("%s.service: User=parley, StateDirectory=parley, no dynamic user" % prog,
             "\nUser=parley\n" in unit and "\nStateDirectory=parley\n" in unit
             and "DynamicUser" not in unit, unit)
        t.ok("%s.service: the database in /var/lib/parley" % prog,
             "Environment=PARLEY_DB=/var/lib/parley/parley.db\n" in unit, unit)
    for page in ("usr/share/man/man8/parley-rest.8.gz", "usr/share/man/man1/parley.1.gz",
                 "usr/share/doc/parley/copyright", "usr/share/doc/parley/changelog.gz",
                 "usr/share/parley/www/demo.html", "usr/bin/parley"):
        t.ok("package has /%s" % page, os.path.isfile(os.path.join(root, page)), page)

    # the unpacked programs, run from their paths
    rest = Unpacked(t, os.path.join(root, "usr/sbin/parley-rest"))
    broker = UnpackedBroker(t, os.path.join(root, "usr/sbin/parley-broker"),
                            tmpdir=rest.tmpdir, port=rest.ws_port, llm="echo")
    resp = rest.get("/demo")
    t.eq("unpacked parley-rest: GET /demo 200 (www found beside the program)",
         resp.status, 200)
    c = broker.client("ann")
    c.expect(type="connected")
    sid = c.create_session()
    ack = c.chat("hello from the package")
    t.eq("chat through the unpacked broker: acknowledged", ack["message"]["content"],
         "hello from the package")
    frames = c.read_reply(sid, timeout=30)
    done = [f for f in frames if f.get("type") == "response_complete"]
    t.ok("the echo assistant replies through the unpacked broker", done, frames)
    resp = rest.get("/sessions/%s" % sid)
    t.eq("unpacked parley-rest: the session's history", resp.status, 200)
    contents = [m.get("content") for m in resp.body["messages"]]
    t.ok("history: the chat and the reply", "hello from the package" in contents
         and len(contents) >= 2, contents)
    c.close()
    broker.stop()
    rest.stop()

    code, out = run(["lintian", "--tag-display-limit", "0", deb], timeout=600)
    errors = [l for l in out.splitlines() if l.startswith("E:")]
    t.eq("lintian: no E: line", errors, [])
    t.diag("lintian: %s" % (out.strip().replace("\n", " | ") or "(nothing)"))


parley.run(main)
