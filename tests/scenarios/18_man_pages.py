"""Manual pages (make man): each page is man/PROG.N.in with the OPTIONS section printed
by `PROG --man` from the option table of common/config.c. For every program the options
its --help lists are exactly the options its page documents (with the same environment
variables), groff -ww renders the page without a warning, and man -l renders it."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import BIN_DIR, ROOT, make_tmpdir  # noqa: E402

PAGES = [("parley-rest", 8), ("parley-fcgi", 8), ("parley-broker", 8), ("parley", 1)]
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "EXIT STATUS",
            "SEE ALSO"]


def version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        return re.search(r"(?m)^VERSION := (\S+)$", f.read()).group(1)


def render(prog, section, out_dir):
    page = os.path.join(out_dir, "%s.%d" % (prog, section))
    with open(page, "w") as f:
        subprocess.run(["sh", os.path.join(ROOT, "tools/render_man.sh"),
                        os.path.join(ROOT, "man", "%s.%d.in" % (prog, section)),
                        os.path.join(BIN_DIR, prog), version()],
                       stdout=f, check=True, timeout=30, env=parley._child_env(None))
    return page


def help_options(text):
    """{flag: set of env variables} from --help."""
    out, last = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z][a-z0-9-]*)", line)
        if m:
            last = m.group(1)
            out.setdefault(last, set())
            continue
        m = re.match(r"^\s+env (\S+)(?: or (\S+))?$", line)
        if m and last:
            out[last] |= {v for v in m.groups() if v}
    return out


def page_options(roff):
    """{flag: set of env variables} from the OPTIONS section of the roff source."""
    body = roff.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0]
    out = {}
    for item in body.split(".TP\n")[1:]:
        head, _, rest = item.partition("\n")
        m = re.match(r'^\.BI? (\\-\\-[a-z0-9\\-]+)', head)
        if not m:
            continue
        flag = m.group(1).replace("\\-", "-")
        envs = re.findall(r"Environment: \\fB\\%([A-Z_]+)\\fR(?: or \\fB\\%([A-Z_]+)\\fR)?",
                          rest)
        out[flag] = {v for pair in envs for v in pair if v}
    return out


def main(t):
    tmp = make_tmpdir()
    for prog, section in PAGES:
        page = render(prog, section, tmp)
        with open(page) as f:
            roff = f.read()
        code, out, err = parley.run_cli(prog, ["--help"])
        t.eq("%s --help: exit 0" % prog, code, 0)
        helped = help_options(out)
        paged = page_options(roff)
        t.ok("%s: --help lists options" % prog, len(helped) > 5, sorted(helped))
        t.eq("%s(%d): the options of --help, no more, no fewer" % (prog, section),
             sorted(paged), sorted(helped))
        t.eq("%s(%d): the environment variables of --help" % (prog, section),
             {k: sorted(v) for k, v in paged.items()},
             {k: sorted(v) for k, v in helped.items()})
        t.ok("%s(%d): no marker left" % (prog, section), "@" not in roff.replace("\\@", ""),
             re.findall(r"@\w+@", roff))
        t.ok("%s(%d): .TH names the page and section" % (prog, section),
             re.search(r'(?m)^\.TH %s %d ' % (re.escape(prog.upper().replace("-", "\\-")),
                                               section), roff), roff[:200])
        for s in SECTIONS:
            t.ok("%s(%d): section %s" % (prog, section, s),
                 re.search(r'(?m)^\.SH "?%s"?$' % s, roff), s)
        r = subprocess.run(["groff", "-ww", "-man", "-Tutf8", page], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        t.eq("%s(%d): groff -ww exit 0" % (prog, section), r.returncode, 0)
        t.eq("%s(%d): groff -ww prints no warning" % (prog, section),
             r.stderr.decode("utf-8", "replace").strip(), "")
        env = dict(parley._child_env(None), MANWIDTH="80", MANPAGER="cat", PAGER="cat",
                   LC_ALL="C.UTF-8")
        r = subprocess.run(["man", "-l", page], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30, env=env)
        text = r.stdout.decode("utf-8", "replace")
        t.eq("%s(%d): man -l exit 0" % (prog, section), r.returncode, 0)
        t.eq("%s(%d): man -l: nothing on stderr" % (prog, section),
             r.stderr.decode("utf-8", "replace").strip(), "")
        t.ok("%s(%d): man -l renders NAME and every option" % (prog, section),
             "NAME" in text and all(f in text for f in helped),
             [f for f in helped if f not in text])


parley.run(main)
