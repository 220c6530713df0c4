"""deploy/systemd and deploy/cluster: the units pass `systemd-analyze verify` (with
ExecStart pointed at the binaries under test; a template unit is verified as an
instance) and carry the sandboxing and state settings the README promises. The cluster
units (one instance per host, --node-id = instance name) keep nothing on the host: no
StateDirectory, the shared settings from /etc/parley/cluster.env, whose example
deploy/cluster/parley-cluster.env names a PostgreSQL --db and a --redis."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import BIN_DIR, ROOT, make_tmpdir  # noqa: E402

UNITS = ["systemd/parley-broker.service", "systemd/parley-fcgi.service",
         "systemd/parley-rest.service",
         "systemd/parley-fcgi.socket"]
CLUSTER_UNITS = ["cluster/parley-broker@.service", "cluster/parley-rest@.service"]
SANDBOX_KEYS = {"DynamicUser": "yes", "User": "parley", "ProtectSystem": "strict",
                "Restart": "on-failure", "NoNewPrivileges": "yes", "PrivateTmp": "yes"}
SERVICE_KEYS = dict(SANDBOX_KEYS, StateDirectory="parley")


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
    for path in UNITS + CLUSTER_UNITS:
        unit = os.path.basename(path)
        with open(os.path.join(ROOT, "deploy", path)) as f:
            text = f.read()
        s = settings(text)
        env = " ".join(s.get("Environment", []))
        if path in CLUSTER_UNITS:
            for k, v in SANDBOX_KEYS.items():
                t.eq("%s: %s=%s" % (unit, k, v), s.get(k), [v])
            t.eq("%s: no state on the host" % unit, s.get("StateDirectory"), None)
            t.eq("%s: the shared settings from /etc/parley/cluster.env" % unit,
                 s.get("EnvironmentFile", [None])[0], "/etc/parley/cluster.env")
            t.ok("%s: the notification socket in its runtime directory" % unit,
                 re.search(r"PARLEY_NOTIFY_SOCKET=/run/%s/" %
                           re.escape(s.get("RuntimeDirectory", ["?"])[0]), env), env)
            if "broker" in unit:
                t.ok("%s: the instance name is the node id" % unit,
                     "PARLEY_NODE_ID=%i" in env, env)
        elif unit.endswith(".service"):
            for k, v in SERVICE_KEYS.items():
                t.eq("%s: %s=%s" % (unit, k, v), s.get(k), [v])
            t.ok("%s: the database in the state directory" % unit,
                 "PARLEY_DB=/var/lib/parley/parley.db" in env, env)
        p = os.path.join(tmp, unit)
        with open(p, "w") as f:
            f.write(text.replace("/usr/local/bin/", BIN_DIR + "/"))
        paths.append(p)
    with open(os.path.join(ROOT, "deploy", "cluster", "parley-cluster.env")) as f:
        cenv = dict(re.findall(r"(?m)^([A-Z_]+)=(.*)$", f.read()))
    t.match("parley-cluster.env: PARLEY_DB is a PostgreSQL URI",
            cenv.get("PARLEY_DB", ""), r"^postgres(ql)?://")
    t.match("parley-cluster.env: PARLEY_REDIS is a redis:// URL",
            cenv.get("PARLEY_REDIS", ""), r"^redis://[^/:]+:\d+(/\d+)?$")
    helps = ""
    for b in ("parley-broker", "parley-rest"):
        code, out, err = parley.run_cli(b, ["--help"])
        helps += out + err
    with open(os.path.join(ROOT, "deploy", "cluster", "parley-cluster.env")) as f:
        named = re.findall(r"(?m)^#?(PARLEY_[A-Z_]+)=", f.read())
    unknown = [v for v in named if not re.search(r"\b%s\b" % v, helps)]
    t.ok("parley-cluster.env: every variable it names is one of --help's",
         named and not unknown, "unknown: %s" % unknown)
    t.eq("parley-fcgi.service takes the socket as standard input",
         settings(open(os.path.join(ROOT, "deploy/systemd/parley-fcgi.service")).read())
         .get("StandardInput"), ["socket"])
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + paths,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    t.eq("systemd-analyze verify: exit 0", r.returncode, 0)
    t.eq("systemd-analyze verify: no complaints", out.strip(), "")


parley.run(main)
