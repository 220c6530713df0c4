#!/usr/bin/python3
"""Parley test runner (what `make test` calls).

Usage: /usr/bin/python3 tests/run.py [--pass LABEL=BINDIR ...] [--jobs N]
                                     [--timeout S] [FILTER...]

For each pass (default `release=bin`) it runs every unit-test binary
build/<label>/tests/test_* and every tests/scenarios/*.py (sorted by name; with
FILTERs, only files whose name contains one of them), with PARLEY_BIN_DIR=<bindir>,
PARLEY_ROOT=<repo root> and PARLEY_PASS=<label> in the environment.

Each test program prints `ok - NAME` or `not ok - NAME: detail` per case; other lines
are diagnostics. A program that exits non-zero without a `not ok` line, or runs past
the timeout, counts as one more failure. The last line printed is `N passed, M failed`;
the exit status is 1 when M > 0 or nothing ran.
"""

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"

_print_lock = threading.Lock()


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


def collect(label, filters):
    """[(display name, argv)] for one pass: unit binaries first, then scenarios."""
    files = []
    unit_dir = os.path.join(ROOT, "build", label, "tests")
    if os.path.isdir(unit_dir):
        for n in sorted(os.listdir(unit_dir)):
            p = os.path.join(unit_dir, n)
            if (n.startswith("test_") and os.path.isfile(p) and os.access(p, os.X_OK)
                    and wanted(n, filters)):
                files.append((os.path.relpath(p, ROOT), [p]))
    scen_dir = os.path.join(ROOT, "tests", "scenarios")
    if os.path.isdir(scen_dir):
        for n in sorted(os.listdir(scen_dir)):
            p = os.path.join(scen_dir, n)
            if n.endswith(".py") and os.path.isfile(p) and wanted(n, filters):
                files.append((os.path.relpath(p, ROOT), [PYTHON, p]))
    return files


def run_file(label, bindir, name, argv, timeout):
    """Runs one test program; returns (passed, failed, lines to print, failed names)."""
    env = dict(os.environ)
    env.update(PARLEY_BIN_DIR=bindir, PARLEY_ROOT=ROOT, PARLEY_PASS=label,
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    prefix = "[%s] %s:" % (label, name)
    start = time.monotonic()
    # Own process group so that on timeout we can stop exactly what this file started.
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
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

    passed = failed = 0
    lines = []
    failures = []
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("ok - ") or line == "ok":
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
    lines.append("%s     (%d passed, %d failed, exit %s, %.1f s)" % (
        prefix, passed, failed, "timeout" if timed_out else p.returncode, elapsed))
    return passed, failed, lines, failures


def main(argv):
    args, passes = parse_args(argv)
    total_passed = total_failed = 0
    all_failures = []
    ran = 0
    for label, bindir in passes:
        files = collect(label, args.filters)
        ran += len(files)
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futs = [pool.submit(run_file, label, bindir, name, fargv, args.timeout)
                    for name, fargv in files]
            for fut in concurrent.futures.as_completed(futs):
                passed, failed, lines, failures = fut.result()
                with _print_lock:
                    print("\n".join(lines), flush=True)
                total_passed += passed
                total_failed += failed
                all_failures += failures
    if all_failures:
        print("\nFailures:")
        for f in all_failures:
            print("  " + f)
    if ran == 0:
        print("no test files found")
    print("%d passed, %d failed" % (total_passed, total_failed), flush=True)
    return 1 if total_failed or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
