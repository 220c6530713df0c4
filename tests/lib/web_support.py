"""Runs a browser test of the web demo: tests/web/*.test.mjs in headless Chromium.

Starts parley-rest and parley-broker (echo assistant) on free loopback ports with a
temporary database, then runs the node script (playwright-core driving Debian's
/usr/bin/chromium) with the addresses in its environment, relaying its `ok - ` /
`not ok - ` lines. The node script asks for the broker to be stopped and started again
with `@@ stop-broker` / `@@ start-broker` lines on its stdout; this module does that (to
the process it started, by pid) and answers on the script's stdin. Screenshots go to
tests/output/web/<pass>/. Used by 80_web_demo.py and 82_web_room.py.
"""
import os
import shutil
import subprocess
import threading
import time

import parley

CHROMIUM = "/usr/bin/chromium"


def run_browser_test(t, script_name, timeout_s, broker_flags=None):
    root = parley.ROOT
    script = os.path.join(root, "tests", "web", script_name)
    missing = [p for p in (CHROMIUM, os.path.join(root, "node_modules", "playwright-core"),
                           os.path.join(root, "www", "vendor", "swagger-ui",
                                        "swagger-ui-bundle.js"))
               if not os.path.exists(p)]
    node = shutil.which("node")
    if missing or not node:
        t.fail("browser test prerequisites", "missing %s; run `make deps` (chromium) and `make` "
               "(npm ci, Swagger UI)" % (missing + ([] if node else ["node"])))
        return
    out_dir = os.path.join(root, "tests", "output", "web", os.environ.get("PARLEY_PASS", "release"))
    os.makedirs(out_dir, exist_ok=True)

    rest = parley.Rest(t, flags={"--www-dir": os.path.join(root, "www")})
    broker = parley.Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, flags=broker_flags)
    brokers = [broker]

    env = dict(os.environ)
    env.update(PARLEY_REST_URL="http://127.0.0.1:%d" % rest.port,
               PARLEY_WS_URL=broker.url,
               PARLEY_TEST_DB=rest.db,
               PARLEY_TEST_NOTIFY_SOCKET=rest.notify_socket,
               PARLEY_TEST_OUTPUT=out_dir,
               PARLEY_BIN_DIR=parley.BIN_DIR)
    p = subprocess.Popen([node, script], cwd=root, env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timed_out = []

    def kill():  # only this node process; its Chromium exits when the pipe closes
        timed_out.append(True)
        p.kill()
    killer = threading.Timer(timeout_s, kill)
    killer.start()
    saw_result = False
    try:
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith("@@ "):
                answer = control(t, line[3:].strip(), brokers, rest, broker_flags)
                p.stdin.write((answer + "\n").encode())
                p.stdin.flush()
            elif line.startswith("ok - "):
                saw_result = True
                t.ok(line[5:], True)
            elif line.startswith("not ok - "):
                saw_result = True
                name, _, detail = line[9:].partition(": ")
                t.fail(name, detail or "failed")
            else:
                t.diag(line[2:] if line.startswith("# ") else line)
        code = p.wait()
    finally:
        killer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    t.ok("the browser test ran to its end within %d s" % timeout_s, not timed_out,
         "node was killed after %d s" % timeout_s)
    t.ok("the browser test reported results", saw_result, "no ok/not ok lines")
    t.eq("node exits 0", code, 0)
    t.diag("screenshots: %s" % out_dir)
    brokers[-1].stop()
    rest.stop()


def control(t, what, brokers, rest, broker_flags):
    """Handles one request of the node script; returns the answer line."""
    if what == "stop-broker":
        b = brokers[-1]
        code = b.stop()
        return "stopped %s" % code
    if what == "start-broker":
        try:
            b = parley.Broker(t, tmpdir=rest.tmpdir, port=rest.ws_port, name="parley-broker-2",
                              flags=broker_flags)
        except Exception as e:  # noqa: BLE001
            t.fail("broker starts again on the same port and database", str(e))
            return "failed"
        brokers.append(b)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # REST sees it up (heartbeat) before pages poll
            r = rest.get("/health")
            if r.status == 200 and r.body.get("broker", {}).get("up") is True:
                break
            time.sleep(0.1)
        return "started"
    t.fail("unknown control request from the browser test", what)
    return "unknown"
