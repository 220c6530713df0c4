#!/usr/bin/python3
"""Two interactive `parley` clients in one session: each sees the other's messages,
typing, joins and leaves; both see clears and the deletion, done over REST. Neither gives a
name, so both go by the login name (SPEC 9; 74_client_room.py has named clients)."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from cli_support import Pane, client_env, login_name, services  # noqa: E402


def main(t):
    rest, broker = services(t)
    env = client_env(rest, broker)
    me = re.escape(login_name())
    a = Pane(t, env, name="a")
    b = None
    try:
        got = a.expect("A creates a session", r"^created session ([0-9a-f]{16});")
        sid = got[0] if got else "0" * 16
        a.line("first from a")
        a.expect("A sees its reply", r"^assistant: first from a$")

        b = Pane(t, env, args=["--session", sid], name="b")
        b.expect("B joins with --session", r"^joined session %s \(2 messages, 2 here\)$" % sid)
        b.expect("B is told who is here", r"^here: %s, %s \(you\)$" % (me, me))
        b.expect("B is shown the recent messages", r"^%s: first from a\n" % me +
                 r"assistant: first from a$")
        a.expect("A sees B join", r"^%s joined \(2 here\)$" % me)

        # typing: B types, A sees it; B sends, A sees the message and the streamed reply
        b.type("hi from")
        a.expect("A sees B typing", r"^%s is typing\.\.\.$" % me)
        b.type(" b")
        b.key("Enter")
        a.expect("A sees B's message", r"^%s: hi from b$" % me)
        a.expect("A sees the reply stream", r"^assistant: hi from b$")
        b.expect("B sees its reply", r"^assistant: hi from b$")

        # typing stops by itself after a pause: a second burst shows again
        shown = len(re.findall(r"^%s is typing\.\.\.$" % me, a.screen(), re.M))
        b.type("x")
        a.expect("typing shown again", r"^%s is typing\.\.\.$" % me, count=shown + 1)
        a.line("/stats")
        a.expect("A /stats counts both streams", r"^  successful streams:\s+2$")
        b.key("BSpace")

        # A types while B talks: A's half-typed line survives B's message
        a.type("draft")
        b.line("interrupting")
        a.expect("A sees the interruption", r"^%s: interrupting$" % me)
        a.expect("A's typed text is redrawn at the prompt",
                 r"^\[%s \| connected\] > draft$" % sid[:8])
        a.key("C-u")

        # clears and deletions come from REST
        r = rest.post("/sessions/%s/clear" % sid)
        t.eq("REST clear", r.status, 200)
        a.expect("A is told of the clear", r"^the history of this session was cleared$")
        b.expect("B is told of the clear", r"^the history of this session was cleared$")

        b.line("/quit")
        t.eq("B exits 0", b.dead_status(), 0)
        a.expect("A sees B leave", r"^%s left \(1 here\)$" % me)

        r = rest.delete("/sessions/%s" % sid)
        t.eq("REST delete", r.status, 200)
        a.expect("A is told of the deletion", r"^session %s was deleted; /new or /join ID$" % sid)
        a.expect("A's prompt has no session", r"^\[no session \| connected\] >")
        a.quit("A")
    finally:
        a.close()
        if b:
            b.close()
    broker.stop()
    rest.stop()


if __name__ == "__main__":
    parley.run(main)
