"""deploy/systemd: the units pass `systemd-analyze verify` (with ExecStart pointed at
the binaries under test) and carry the sandboxing and state settings the README
promises."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import BIN_DIR, ROOT, make_tmpdir  # noqa: E402

UNITS = ["parley-broker.service", "parley-fcgi.service", "parley-fcgi.socket"]
SERVICE_KEYS = {"DynamicUser": "yes", "User": "parley", "StateDirectory": "parley",
                "ProtectSystem": "strict", "Restart": "on-failure",
                "NoNewPrivileges": "yes", "PrivateTmp": "yes"}


def settings(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def main(t):
    tmp = make_tmpdir()
    paths = []
    for unit in UNITS:
        with open(os.path.join(ROOT, "deploy", "systemd", unit)) as f:
            text = f.read()
        s = settings(text)
        if unit.endswith(".service"):
            for k, v in SERVICE_KEYS.items():
                t.eq("%s: %s=%s" % (unit, k, v), s.get(k), [v])
            env = " ".join(s.get("Environment", []))
            t.ok("%s: the database in the state directory" % unit,
                 "PARLEY_DB=/var/lib/parley/parley.db" in env, env)
        p = os.path.join(tmp, unit)
        with open(p, "w") as f:
            f.write(text.replace("/usr/local/bin/", BIN_DIR + "/"))
        paths.append(p)
    t.eq("parley-fcgi.service takes the socket as standard input",
         settings(open(os.path.join(ROOT, "deploy/systemd/parley-fcgi.service")).read())
         .get("StandardInput"), ["socket"])
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + paths,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    t.eq("systemd-analyze verify: exit 0", r.returncode, 0)
    t.eq("systemd-analyze verify: no complaints", out.strip(), "")


parley.run(main)
