#!/usr/bin/python3
"""The interactive `parley` client reconnects after the broker restarts (backoff shown),
rejoins with `since` and loses nothing: neither what was said while it was away nor
what was typed while offline."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from cli_support import Pane, client_env, services  # noqa: E402


def main(t):
    rest, broker = services(t)
    env = client_env(rest, broker)
    p = Pane(t, env)
    try:
        got = p.expect("session created", r"^created session ([0-9a-f]{16});")
        sid = got[0] if got else "0" * 16
        p.line("before the restart")
        p.expect("reply before the restart", r"^assistant: before the restart$")

        broker.stop()
        p.expect("the loss is shown with the retry delay",
                 r"^connection to %s \(connection closed\); reconnecting in (0\.[89]|1\.[0-2]) s$"
                 % re.escape(broker.url))
        p.expect("prompt shows reconnecting", r"^\[%s \| reconnecting\] >" % sid[:8])
        p.expect("failed attempts back off (second delay 1.6-2.4 s)",
                 r"^cannot connect to .*; reconnecting in (1\.[6-9]|2\.[0-4]) s$", timeout=5)

        # said while the client was away, and typed while offline
        rest.add_message(sid, "said while you were away")
        p.line("typed while offline")
        p.expect("offline message kept", r"^\(offline: the message is kept and sent when "
                 r"reconnected\)$")

        broker = parley.Broker(t, tmpdir=rest.tmpdir, port=broker.port, name="parley-broker-2")
        p.expect("reconnected and rejoining since the last id",
                 r"^reconnected to %s; rejoining session %s since message #2$"
                 % (re.escape(broker.url), sid), timeout=15)
        p.expect("the missed message is shown", r"^rest: said while you were away$")
        p.expect("rejoin summary", r"^rejoined session %s: 1 missed message, 1 here$" % sid)
        p.expect("the offline message is sent and answered", r"^assistant: typed while offline$")

        r = rest.get("/sessions/%s" % sid)
        t.eq("history has everything exactly once, in order",
             [(m["role"], m["content"]) for m in r.body.get("messages", [])],
             [("user", "before the restart"), ("assistant", "before the restart"),
              ("user", "said while you were away"), ("user", "typed while offline"),
              ("assistant", "typed while offline")])
        p.line("/stats")
        p.expect("/stats counts the reconnection", r"^  reconnections:\s+1$")
        p.expect("/stats counts the attempts", r"^  connection attempts:\s+([3-9]|\d\d)$")
        p.quit("reconnect")
    finally:
        p.close()
    broker.stop()
    rest.stop()


if __name__ == "__main__":
    parley.run(main)
