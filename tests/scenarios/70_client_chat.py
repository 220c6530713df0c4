#!/usr/bin/python3
"""The interactive `parley` client in a terminal (tmux): a chat with the echo reply
streamed on screen, and every slash command."""
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
        p.expect("banner", r"^Parley \d+\.\d+\.\d+: /help lists the commands")
        p.expect("connected line names the URL and the assistant",
                 r"^connected to %s \(assistant: echo\)$" % re.escape(broker.url))
        sid = p.expect("a session is created", r"^created session ([0-9a-f]{16});")
        sid = sid[0] if sid else ""
        p.expect("prompt shows the session and the state",
                 r"^\[%s \| connected\] >" % sid[:8])

        # a chat: the echo streams back, stored through REST too
        p.line("hello there")
        p.expect("echo reply on screen", r"^assistant: hello there$")
        r = rest.get("/sessions/%s" % sid)
        t.eq("REST has the user message and the reply",
             [(m["role"], m["content"]) for m in r.body.get("messages", [])],
             [("user", "hello there"), ("assistant", "hello there")])

        p.line("/help")
        got = p.expect("/help lists the commands", r"^  /stop\s+stop the reply")
        if got:
            for c in ["help", "stats", "server", "health", "docs", "demo", "clear", "quit",
                      "connect", "disconnect", "ping", "new", "info", "sessions", "join",
                      "leave", "history", "stop"]:
                t.ok("/help lists /%s" % c, re.search(r"^  /%s\b" % c, p.screen(), re.M),
                     p.screen()[-1500:])

        p.line("/stats")
        if p.expect("/stats printed", r"^  current session:\s+%s \(2 messages\)$" % sid):
            s = p.screen()
            for label, value in [("messages sent", "1"), ("successful streams", "1"),
                                 ("failed streams", "0"), ("chunks received", "3"),
                                 ("avg chunks per stream", "3.0"),
                                 ("connection attempts", "1"), ("reconnections", "0"),
                                 ("sessions created", "1"), ("connection", "connected")]:
                t.ok("/stats %s = %s" % (label, value),
                     re.search(r"^  %s:\s+%s$" % (re.escape(label), re.escape(value)), s, re.M),
                     s[-1200:])
            t.ok("/stats session duration", re.search(r"^  session duration:\s+\d+\.\d s$", s, re.M),
                 s[-1200:])
            t.ok("/stats avg response time", re.search(r"^  avg response time:\s+0\.\d{3} s$", s,
                                                       re.M), s[-1200:])

        p.line("/ping")
        p.expect("/ping prints the round trip", r"^pong: round trip \d+\.\d\d ms$")

        # the broker's live figures reach REST within ~2 s
        for _ in range(8):
            p.line("/server")
            if p.wait(r"^  websocket_connections\s+1$", timeout=0.5):
                break
        p.expect("/server shows REST /stats: model", r"^  model\s+echo$")
        p.expect("/server shows REST /stats: websocket_connections 1",
                 r"^  websocket_connections\s+1$")
        p.line("/health")
        p.expect("/health summary", r"^status healthy, database ok, broker up \(1 connections\),"
                 r" uptime \d+ s$")

        p.line("/docs")
        p.expect("/docs prints the URL", r"^API documentation: http://127\.0\.0\.1:%d/docs$"
                 % rest.port)
        p.line("/demo")
        p.expect("/demo prints the URL", r"^Web demo: http://127\.0\.0\.1:%d/demo$" % rest.port)
        p.expect("no display: nothing opened", r"^\(no display: open it in a browser\)$", count=2)

        p.line("/info")
        p.expect("/info session", r"^  session:\s+%s$" % sid)
        p.expect("/info messages", r"^  messages:\s+2$")
        p.expect("/info assistant", r"^  assistant:\s+echo$")

        p.line("/sessions")
        p.expect("/sessions marks the current one with counts",
                 r"^\* %s\s+2\s+1\s+\d+[smhd]$" % sid)

        p.line("/history 1")
        p.expect("/history 1 shows the last message only",
                 r"^Last 1 message\(s\) of session %s:\n#\d+ \S+Z assistant: hello there$" % sid)

        p.line("/hepl")
        p.expect("unknown command suggests the nearest", r"^unknown command /hepl; did you mean "
                 r"/help\?$")
        p.line("/frobnicate")
        p.expect("far from everything: no suggestion",
                 r"^unknown command /frobnicate; /help lists the commands$")

        # /stop typed while a long reply streams
        words = " ".join("w%d" % i for i in range(120))
        p.line(words)
        p.wait(r"^assistant: w0 w1 w2 w3", timeout=5)
        p.line("/stop")
        p.expect("/stop stops the reply", r"^\(reply stopped\)$")
        r = rest.get("/sessions/%s" % sid)
        last = r.body["messages"][-1] if r.status == 200 and r.body.get("messages") else {}
        t.ok("the stopped reply is stored shorter than the message",
             last.get("role") == "assistant" and words.startswith(last.get("content", "x")) and
             len(last.get("content", "")) < len(words), repr(last)[:200])

        # /new, /join, /leave
        p.line("/new second one")
        got = p.wait(r"^created session ([0-9a-f]{16});", count=2)
        sid2 = got[-1] if got else ""
        t.ok("/new creates another session", sid2 and sid2 != sid, repr(got))
        p.expect("/new leaves the old session", r"^left session %s$" % sid)
        t.eq("/new titles it", rest.get("/sessions/%s" % sid2).body.get("title"), "second one")
        p.line("/join %s" % sid)
        p.expect("/join joins with counts", r"^joined session %s \(\d+ messages, 1 here\)$" % sid)
        p.expect("/join shows the recent messages", r"^you: hello there$")
        p.expect("prompt follows /join", r"^\[%s \| connected\] >" % sid[:8])
        p.line("/join nothex")
        p.expect("/join with a bad id says how", r"^usage: /join ID")
        p.line("/leave")
        p.expect("/leave", r"^left session %s$" % sid, count=2)
        p.expect("prompt without a session", r"^\[no session \| connected\] >")
        p.line("just text")
        p.expect("chat without a session is refused", r"^no session: /new to create one")

        # /disconnect, /connect
        p.line("/disconnect")
        p.expect("/disconnect", r"^disconnected$")
        p.expect("prompt offline", r"^\[no session \| offline\] >")
        p.line("/connect")
        p.expect("/connect", r"^connected to %s; no session" % re.escape(broker.url))

        p.line("/clear")
        t.ok("/clear clears the screen", p.wait(r"^Parley \d", timeout=0.5) is None or
             not re.search(r"^Parley \d", p.screen().split("/clear")[-1], re.M),
             p.screen()[-500:])
        t.ok("colour on a terminal", "\x1b[" in p.screen(escapes=True), "no escape sequences")
        p.quit("chat")
    finally:
        p.close()

    # NO_COLOR: no escape sequences at all
    q = Pane(t, dict(env, NO_COLOR="1"), name="nocolor")
    try:
        q.expect("NO_COLOR client starts", r"^created session [0-9a-f]{16}")
        q.line("/help")
        q.expect("NO_COLOR /help", r"^  /stop")
        t.ok("NO_COLOR: no escape sequences", "\x1b[" not in q.screen(escapes=True).replace(
            "\x1b[0m", "", 0), repr(q.screen(escapes=True)[:300]))
        q.key("C-d")
        t.eq("Ctrl-D exits 0", q.dead_status(), 0)
    finally:
        q.close()
    broker.stop()
    rest.stop()


if __name__ == "__main__":
    parley.run(main)
