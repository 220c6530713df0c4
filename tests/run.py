#!/usr/bin/python3
"""Parley test runner (what `make test` calls).

Usage: /usr/bin/python3 tests/run.py [--pass LABEL=BINDIR ...] [--jobs N]
                                     [--timeout S] [FILTER...]

For each pass (default `release=bin`) it runs every unit-test binary
build/<label>/tests/test_* and every tests/scenarios/*.py (sorted by name; with
FILTERs, only files whose name contains one of them), with PARLEY_BIN_DIR=<bindir>,
PARLEY_ROOT=<repo root> and PARLEY_PASS=<label> in the environment.

PostgreSQL passes (SPEC 7): a pass whose LABEL starts with `pg` (`--pass pg=bin`,
`--pass pg-asan=build/asan/bin`) runs on PostgreSQL instead of SQLite files. The runner
starts one throwaway cluster for the pass (tests/lib/pgcluster.py: PostgreSQL 15 from
/usr/lib/postgresql/15/bin, as the postgres user when run as root, Unix socket only in a
temporary directory), exports PARLEY_TEST_DB=postgresql, PARLEY_TEST_PG_HOST=<socket
dir>, PARLEY_TEST_PG_PORT, PARLEY_TEST_PG_USER, PARLEY_TEST_PG_BIN and
PARLEY_TEST_PG_DATA to the test programs (tests/lib/parley.py then gives every process a
database of that cluster, one per temporary directory), and stops and removes the cluster
when the pass is over; the server log is kept as tests/output/pg/<label>-server.log. The
unit-test binaries are SQLite-specific: a PostgreSQL pass runs only those that opt in by
their name, test_pg_*, from the build next to BINDIR (bin: build/release/tests; X/bin:
X/tests). Other passes get PARLEY_TEST_DB=sqlite.

Each test program prints `ok - NAME` or `not ok - NAME: detail` per case; other lines
are diagnostics. `ok - NAME # skip REASON` is a case that does not apply to the pass
(e.g. an SQLite file check on PostgreSQL): counted as skipped, neither passed nor failed.
A program that exits non-zero without a `not ok` line, or runs past the timeout, counts
as one more failure. When something was skipped, the line before the last says how
many; the last line printed is `N passed, M failed`; the exit status is 1 when M > 0 or
nothing ran.
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import pgcluster  # noqa: E402

SKIP_RE = re.compile(r"#\s*skip\b", re.IGNORECASE)
PG_ENV_KEYS = ("PARLEY_TEST_DB", "PARLEY_TEST_PG_HOST", "PARLEY_TEST_PG_PORT",
               "PARLEY_TEST_PG_USER", "PARLEY_TEST_PG_BIN", "PARLEY_TEST_PG_DATA")

_print_lock = threading.Lock()
_running = set()  # the test programs running now (each leads its own process group)
_running_lock = threading.Lock()


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Run Parley's unit and scenario tests.")
    ap.add_argument("--pass", dest="passes", action="append", default=[],
                    metavar="LABEL=BINDIR",
                    help="a build to test (repeatable; default release=bin)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="files run in parallel (2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per file (300)")
    ap.add_argument("filters", nargs="*", metavar="FILTER",
                    help="run only files whose name contains one of these")
    args = ap.parse_args(argv)
    passes = []
    for p in args.passes or ["release=bin"]:
        label, sep, bindir = p.partition("=")
        if not sep or not label or not bindir:
            ap.error("--pass wants LABEL=BINDIR, got %r" % p)
        passes.append((label, os.path.normpath(os.path.join(ROOT, bindir))))
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    return args, passes


def wanted(name, filters):
    return not filters or any(f in name for f in filters)


def is_pg_pass(label):
    return label.startswith("pg")


def unit_dir_of(label, bindir):
    """Where a pass's unit-test binaries are: build/<label>/tests; for a PostgreSQL pass,
    the build BINDIR belongs to (bin: build/release/tests, X/bin: X/tests)."""
    if not is_pg_pass(label):
        return os.path.join(ROOT, "build", label, "tests")
    if os.path.normpath(bindir) == os.path.join(ROOT, "bin"):
        return os.path.join(ROOT, "build", "release", "tests")
    return os.path.join(os.path.dirname(os.path.normpath(bindir)), "tests")


def collect(label, bindir, filters):
    """[(display name, argv)] for one pass: unit binaries first, then scenarios."""
    files = []
    unit_dir = unit_dir_of(label, bindir)
    prefix = "test_pg_" if is_pg_pass(label) else "test_"
    if os.path.isdir(unit_dir):
        for n in sorted(os.listdir(unit_dir)):
            p = os.path.join(unit_dir, n)
            if (n.startswith(prefix) and os.path.isfile(p) and os.access(p, os.X_OK)
                    and wanted(n, filters)):
                files.append((os.path.relpath(p, ROOT), [p]))
    scen_dir = os.path.join(ROOT, "tests", "scenarios")
    if os.path.isdir(scen_dir):
        for n in sorted(os.listdir(scen_dir)):
            p = os.path.join(scen_dir, n)
            if n.endswith(".py") and os.path.isfile(p) and wanted(n, filters):
                files.append((os.path.relpath(p, ROOT), [PYTHON, p]))
    return files


def run_file(label, bindir, name, argv, timeout, db_env):
    """Runs one test program; returns (passed, failed, skipped, lines to print, failed
    names)."""
    env = {k: v for k, v in os.environ.items() if k not in PG_ENV_KEYS}
    env.update(PARLEY_BIN_DIR=bindir, PARLEY_ROOT=ROOT, PARLEY_PASS=label,
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    env.update(db_env)
    prefix = "[%s] %s:" % (label, name)
    start = time.monotonic()
    # Own process group so that on timeout we can stop exactly what this file started.
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    with _running_lock:
        _running.add(p)
    timed_out = False
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, _ = p.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    elapsed = time.monotonic() - start
    with _running_lock:
        _running.discard(p)

    passed = failed = skipped = 0
    lines = []
    failures = []
    for line in out.decode("utf-8", "replace").splitlines():
        if (line.startswith("ok - ") or line.startswith("ok #")) and SKIP_RE.search(line):
            skipped += 1
            lines.append("%s %s" % (prefix, line))
        elif line.startswith("ok - ") or line == "ok":
            passed += 1
            lines.append("%s %s" % (prefix, line))
        elif line.startswith("not ok"):
            failed += 1
            lines.append("%s %s" % (prefix, line))
            failures.append("%s %s" % (prefix, line))
        else:
            lines.append("%s     %s" % (prefix, line))
    if timed_out:
        failed += 1
        msg = "%s not ok - (timed out after %.0f s)" % (prefix, timeout)
        lines.append(msg)
        failures.append(msg)
    elif p.returncode != 0 and not any(f.startswith(prefix + " not ok") for f in failures):
        failed += 1
        msg = "%s not ok - (exited with status %s and no failing case)" % (prefix, p.returncode)
        lines.append(msg)
        failures.append(msg)
    lines.append("%s     (%d passed, %d failed, %sexit %s, %.1f s)" % (
        prefix, passed, failed, "%d skipped, " % skipped if skipped else "",
        "timeout" if timed_out else p.returncode, elapsed))
    return passed, failed, skipped, lines, failures


def start_cluster(label):
    """The PostgreSQL pass's cluster, started: (cluster, None) or (None, why not)."""
    cluster = pgcluster.Cluster(prefix="parley-pg-%s-" % re.sub(r"[^A-Za-z0-9]", "", label))
    t0 = time.monotonic()
    try:
        cluster.start()
    except Exception as e:  # noqa: BLE001 - one failure, reported
        try:
            cluster.destroy()
        except Exception:  # noqa: BLE001
            pass
        return None, "%s: %s" % (type(e).__name__, e)
    print("[%s]     PostgreSQL test cluster up in %.1f s: %s (socket only, pid %s)" % (
        label, time.monotonic() - t0, cluster.host, cluster.postmaster_pid()), flush=True)
    return cluster, None


def stop_cluster(label, cluster):
    """Stops and removes the pass's cluster; keeps its log in tests/output/pg/."""
    try:
        cluster.stop()
    except Exception as e:  # noqa: BLE001
        print("[%s]     stopping the PostgreSQL test cluster: %s" % (label, e), flush=True)
    try:
        out = os.path.join(ROOT, "tests", "output", "pg")
        os.makedirs(out, exist_ok=True)
        dest = os.path.join(out, "%s-server.log" % label)
        shutil.copyfile(cluster.log_path, dest)
        print("[%s]     PostgreSQL server log: %s" % (label, os.path.relpath(dest, ROOT)),
              flush=True)
    except OSError:
        pass
    cluster.destroy()


def _sigterm(signum, frame):
    """SIGTERM or SIGINT (Ctrl-C): the running test programs get SIGTERM (their process
    groups: they run in sessions of their own), then the finally clauses stop the
    PostgreSQL clusters (pg_ctl starts the server in a session of its own too)."""
    with _running_lock:
        running = list(_running)
    for p in running:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    raise SystemExit(128 + signum)


def main(argv):
    args, passes = parse_args(argv)
    total_passed = total_failed = total_skipped = 0
    all_failures = []
    ran = 0
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, _sigterm)
    for label, bindir in passes:
        files = collect(label, bindir, args.filters)
        ran += len(files)
        cluster = None
        db_env = {"PARLEY_TEST_DB": "sqlite"}
        if is_pg_pass(label) and files:
            cluster, why = start_cluster(label)
            if cluster is None:
                msg = "[%s] PostgreSQL test cluster: not ok - it did not start: %s" % (
                    label, why.replace("\n", "\n    "))
                print(msg, flush=True)
                total_failed += 1
                all_failures.append(msg.split("\n", 1)[0])
                continue
            db_env = cluster.env()
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                futs = [pool.submit(run_file, label, bindir, name, fargv, args.timeout,
                                    db_env)
                        for name, fargv in files]
                for fut in concurrent.futures.as_completed(futs):
                    passed, failed, skipped, lines, failures = fut.result()
                    with _print_lock:
                        print("\n".join(lines), flush=True)
                    total_passed += passed
                    total_failed += failed
                    total_skipped += skipped
                    all_failures += failures
        finally:
            if cluster is not None:
                stop_cluster(label, cluster)
    if all_failures:
        print("\nFailures:")
        for f in all_failures:
            print("  " + f)
    if ran == 0:
        print("no test files found")
    if total_skipped:
        print("%d skipped (cases that do not apply to their pass: the `# skip` lines above)"
              % total_skipped)
    print("%d passed, %d failed" % (total_passed, total_failed), flush=True)
    return 1 if total_failed or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
