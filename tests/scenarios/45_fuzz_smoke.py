"""The libFuzzer harnesses (fuzz/, built by `make fuzz-build` into build/fuzz/) on their
committed corpus: each replays every input of fuzz/corpus/NAME/ (seeds and the inputs of
crashes found and fixed) and then fuzzes for a few seconds, under ASan + UBSan with leak
checks. A harness passes when libFuzzer exits 0 having run the whole corpus. New inputs go
to a scratch folder, crash files to a temporary one: the committed corpus never grows by
itself. `make fuzz` is the long run (FUZZ_SECONDS each)."""

import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import ROOT, make_tmpdir  # noqa: E402

HARNESSES = ["fuzz_sse", "fuzz_router", "fuzz_fcgi", "fuzz_config", "fuzz_inbound"]
SECONDS = 2
# a different seed per pass, so the two passes do not repeat each other
SEED = {"release": 1, "asan": 2}.get(os.environ.get("PARLEY_PASS", ""), 3)


def run_harness(t, name):
    binary = os.path.join(ROOT, "build", "fuzz", name)
    corpus = os.path.join(ROOT, "fuzz", "corpus", name)
    if not os.access(binary, os.X_OK):
        t.fail(name, "%s is not built: run 'make fuzz-build'" % binary)
        return
    seeds = len(os.listdir(corpus)) if os.path.isdir(corpus) else 0
    t.ok("%s: a committed corpus" % name, seeds > 0, "no files in %s" % corpus)
    scratch = make_tmpdir("parley-fuzz-")
    argv = [binary, "-max_total_time=%d" % SECONDS, "-timeout=10", "-seed=%d" % SEED,
            "-artifact_prefix=%s/" % scratch, os.path.join(scratch, "new"), corpus]
    dict_path = os.path.join(ROOT, "fuzz", name + ".dict")
    if os.path.isfile(dict_path):
        argv.insert(1, "-dict=" + dict_path)
    os.makedirs(os.path.join(scratch, "new"))
    p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=SECONDS + 60)
    out = p.stdout.decode("utf-8", "replace")
    inited = re.search(r"^#(\d+)\s+INITED cov: (\d+) ft: (\d+)", out, re.M)
    done = re.findall(r"^#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", out, re.M)
    if p.returncode != 0:
        why = [ln for ln in out.splitlines()
               if "ERROR" in ln or "SUMMARY" in ln or "artifact" in ln or "Test unit" in ln]
        t.fail("%s: corpus and %d s of fuzzing without a crash or leak" % (name, SECONDS),
               "exit %s: %s" % (p.returncode, " | ".join(why[:4]) or out[-400:]))
        return
    t.ok("%s: corpus and %d s of fuzzing without a crash or leak" % (name, SECONDS),
         inited is not None and done, "no INITED/DONE line in: %s" % out[-400:])
    t.ok("%s: every corpus input ran (%d files)" % (name, seeds),
         inited is not None and int(inited.group(1)) >= seeds,
         "INITED after %s inputs" % (inited.group(1) if inited else "?"))
    if done:
        t.diag("%s: %s runs, cov %s ft %s" % ((name,) + done[-1]))


def main(t):
    if parley.PG:
        # the harnesses take no --db (fuzz_inbound's broker uses an SQLite file in /dev/shm):
        # a PostgreSQL pass would only repeat the release pass, and need build/fuzz
        t.skip("fuzz harnesses", "not a database test: the release and asan passes run them")
        return
    for name in HARNESSES:
        with t.section(name):
            run_harness(t, name)


parley.run(main)
