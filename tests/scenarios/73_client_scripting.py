#!/usr/bin/python3
"""`parley send`, `parley sessions`, `parley history`, --help and --version: exact output
and exit statuses."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from cli_support import client_env, login_name, run_parley, services  # noqa: E402


def main(t):
    rest, broker = services(t)
    env = client_env(rest, broker)

    rc, out, err = run_parley(["send", "hello", "there"], env)
    t.eq("send: exit 0", rc, 0)
    t.eq("send: stdout is exactly the reply and a newline", out, "hello there\n")
    t.eq("send: nothing on stderr", err, "")
    sessions = rest.get("/sessions").body["sessions"]
    t.eq("send created one session with the message and the reply",
         [(s["message_count"]) for s in sessions], [2])
    sid = sessions[0]["session_id"]

    rc, out, err = run_parley(["send", "--session", sid], env, stdin="from  stdin\n")
    t.eq("send from stdin into --session: exit 0", rc, 0)
    t.eq("send from stdin: reply (spacing kept, trailing newline dropped)", out, "from  stdin\n")
    t.eq("--session used, no new session", rest.get("/sessions").body["total"], 1)

    rc, out, err = run_parley(["sessions"], env)
    t.eq("sessions: exit 0", rc, 0)
    lines = out.splitlines()
    t.eq("sessions: header", lines[0] if lines else None,
         "  SESSION          MESSAGES CLIENTS   AGE  TITLE")
    t.match("sessions: the row", lines[1] if len(lines) > 1 else "",
            r"^  %s        4       0 +\d+[smhd]$" % sid)
    t.eq("sessions: total line", lines[-1] if lines else None, "1 session(s)")

    rc, out, err = run_parley(["sessions", "--json"], env)
    t.eq("sessions --json: exit 0", rc, 0)
    body = json.loads(out) if rc == 0 else {}
    t.eq("sessions --json is GET /sessions", [s["session_id"] for s in body.get("sessions", [])],
         [sid])
    t.eq("sessions --json total", body.get("total"), 1)

    rc, out, err = run_parley(["history", sid], env)
    t.eq("history: exit 0", rc, 0)
    t.match("history: four lines, oldest first", out,
            r"^#1 \S+Z {me}: hello there\n#2 \S+Z assistant: hello there\n"
            r"#3 \S+Z {me}: from  stdin\n#4 \S+Z assistant: from  stdin\n$".replace(
                "{me}", re.escape(login_name())))
    rc, out, err = run_parley(["history", sid, "--json"], env)
    body = json.loads(out) if rc == 0 else {}
    t.eq("history --json: the session's messages", [m["content"] for m in body.get("messages", [])],
         ["hello there", "hello there", "from  stdin", "from  stdin"])

    # failures: a message on stderr, a non-zero status, nothing on stdout
    rc, out, err = run_parley(["history", "0123456789abcdef"], env)
    t.eq("history of a missing session: exit 1", rc, 1)
    t.eq("history of a missing session: no stdout", out, "")
    t.match("history of a missing session: says so", err, r"^parley: GET /sessions/0123456789abcdef"
            r"\?limit=1000: no session with id")
    rc, out, err = run_parley(["history", "nope"], env)
    t.eq("history with a bad id: exit 2", rc, 2)
    rc, out, err = run_parley(["send", "--session", "0123456789abcdef", "hi"], env)
    t.eq("send into a missing session: exit 1", rc, 1)
    t.match("send into a missing session: the error", err, r"^parley: session_not_found: ")
    t.eq("send into a missing session: no stdout", out, "")
    rc, out, err = run_parley(["send"], env, stdin="")
    t.eq("send with nothing to send: exit 2", rc, 2)
    t.match("send with nothing: says how", err, r"^parley: nothing to send")
    dead = "ws://127.0.0.1:%d/ws" % parley.free_port()
    rc, out, err = run_parley(["send", "hi"], dict(env, PARLEY_WS_URL=dead))
    t.eq("send with no broker: exit 1", rc, 1)
    t.match("send with no broker: says so", err, r"^parley: cannot connect to %s: " % dead)
    rc, out, err = run_parley(["sessions"], dict(env, PARLEY_REST_URL="http://127.0.0.1:%d"
                                                 % parley.free_port()))
    t.eq("sessions with no REST: exit 1", rc, 1)
    t.match("sessions with no REST: says so", err, r"^parley: GET http://127\.0\.0\.1:\d+/sessions")
    rc, out, err = run_parley(["frob"], env)
    t.eq("unknown command: exit 2", rc, 2)
    t.eq("unknown command: message", err, "parley: unknown command 'frob'; see 'parley --help'\n")
    rc, out, err = run_parley([], env)
    t.eq("interactive mode without a terminal: exit 2", rc, 2)

    # assistant none: send stores and prints nothing
    broker.stop()
    broker = parley.Broker(t, tmpdir=rest.tmpdir, port=broker.port, llm="none",
                           name="parley-broker-none")
    rc, out, err = run_parley(["send", "--session", sid, "quiet"], env)
    t.eq("send with no assistant: exit 0", rc, 0)
    t.eq("send with no assistant: no output", (out, err), ("", ""))

    rc, out, err = run_parley(["--help"], env)
    t.eq("--help: exit 0", rc, 0)
    for item in ["--url URL", "PARLEY_WS_URL", "--rest-url URL", "PARLEY_REST_URL", "--api-key",
                 "--session ID", "--json", "--timeout S", "--no-color", "--version",
                 "send [TEXT...]", "sessions [--json]", "history ID [--json]", "/stop", "NO_COLOR"]:
        t.ok("--help mentions %s" % item, item in out, out[:300])
    rc, out, err = run_parley(["--version"], env)
    t.eq("--version", (rc, out), (0, "parley 0.1.0\n"))
    broker.stop()
    rest.stop()


if __name__ == "__main__":
    parley.run(main)
