#!/usr/bin/python3
"""People in a room (SPEC 9) with two named interactive `parley` clients (tmux): names on
messages, joins and typing, who is here on a join; /name; /mode (PATCH reply_mode) seen by
both, then mention-only replies; /regenerate with the superseded note and the new reply;
a name of 65 characters refused; `parley send --name`."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from cli_support import Pane, client_env, run_parley, services  # noqa: E402

MENTION_LINE = ("reply mode is now mention: the assistant answers only messages that mention "
                "@assistant (or @echo)")


def main(t):
    rest, broker = services(t)
    env = client_env(rest, broker)
    a = Pane(t, env, args=["--name", "alice"], name="a")
    b = None
    try:
        got = a.expect("A creates a session", r"^created session ([0-9a-f]{16});")
        sid = got[0] if got else "0" * 16
        b = Pane(t, dict(env, PARLEY_NAME="bob"), args=["--session", sid], name="b")
        b.expect("B joins", r"^joined session %s \(0 messages, 2 here\)$" % sid)
        b.expect("B is told who is here, itself marked", r"^here: alice, bob \(you\)$")
        a.expect("A sees bob join, by name", r"^bob joined \(2 here\)$")

        # typing and messages carry names both ways
        b.type("hello")
        a.expect("A sees bob typing, by name", r"^bob is typing\.\.\.$")
        b.type(" all")
        b.key("Enter")
        a.expect("A sees bob's message under his name", r"^bob: hello all$")
        a.expect("A sees the reply", r"^assistant: hello all$")
        b.expect("B sees the reply", r"^assistant: hello all$")
        a.line("hi bob")
        b.expect("B sees alice's message under her name", r"^alice: hi bob$")
        b.expect("B sees the reply to it", r"^assistant: hi bob$")

        # /name: refused when too long, else the next message carries the new name
        a.line("/name " + "n" * 65)
        a.expect("/name with 65 characters is refused locally",
                 r"^cannot use that name: a name is 1 to 64 characters; this one has 65$")
        a.line("/name Alice Liddell")
        a.expect("/name is confirmed",
                 r"^you are now Alice Liddell \(others see it on your next message\)$")
        a.line("renamed")
        b.expect("B sees the new name on alice's next message", r"^Alice Liddell: renamed$")
        a.type("x")
        b.expect("B sees the new name typing", r"^Alice Liddell is typing\.\.\.$")
        a.key("BSpace")
        b.expect("B sees that reply", r"^assistant: renamed$")
        r = rest.get("/sessions/%s" % sid)
        t.eq("REST history records each author's name",
             [(m.get("author") or {}).get("name") for m in r.body.get("messages", [])
              if m["role"] == "user"], ["bob", "alice", "Alice Liddell"])

        # /mode: a bad value is a local error; a good one is PATCHed and both see it
        a.line("/mode sometimes")
        a.expect("/mode with a bad value lists the three modes",
                 r"^unknown reply mode 'sometimes'; use /mode always \(every message is answered\), "
                 r"/mode mention \(only messages with @assistant\) or /mode off \(none\)$")
        a.line("/mode mention")
        a.expect("A sees the mode change", "^%s$" % re.escape(MENTION_LINE))
        b.expect("B sees the mode change too", "^%s$" % re.escape(MENTION_LINE))
        t.eq("REST: the session's reply_mode", rest.get("/sessions/%s" % sid).body.get("reply_mode"),
             "mention")
        a.line("/mode mention")
        a.expect("the same mode again says so", r"^the reply mode is mention already$")
        b.line("no mention here")
        a.expect("A sees the unmentioned message", r"^bob: no mention here$")
        b.line("@assistant please answer")
        a.expect("a chat with @assistant is answered", r"^assistant: @assistant please answer$")
        b.expect("B sees that answer", r"^assistant: @assistant please answer$")
        for p, who in ((a, "A"), (b, "B")):
            t.ok("%s: the unmentioned message got no reply" % who,
                 not re.search(r"^assistant: no mention here$", p.screen(), re.M), p.screen()[-1500:])
            t.eq("%s: the mode line was shown once" % who,
                 len(re.findall("^%s$" % re.escape(MENTION_LINE), p.screen(), re.M)), 1)

        # /regenerate: the old reply is marked superseded, the new one streams to both
        a.line("/regenerate")
        got = a.expect("A sees the superseded note", r"^\(reply #(\d+) superseded: regenerating\)$")
        b.expect("B sees the superseded note", r"^\(reply #(\d+) superseded: regenerating\)$")
        a.expect("A sees the new reply", r"^assistant: @assistant please answer$", count=2)
        b.expect("B sees the new reply", r"^assistant: @assistant please answer$", count=2)
        r = rest.get("/sessions/%s?all=true" % sid)
        old = [m for m in r.body.get("messages", []) if m.get("status") == "superseded"]
        t.eq("the note names the superseded reply", [str(m["id"]) for m in old],
             got[:1] if got else ["?"])
        a.line("/help")
        a.expect("/help lists /regenerate", r"^  /regenerate\s+have the assistant answer the last")
        for c in ("name", "mode"):
            t.ok("/help lists /%s" % c, re.search(r"^  /%s\b" % c, a.screen(), re.M),
                 a.screen()[-1500:])

        # scripting: send --name stores the name; history shows it
        a.line("/mode always")
        a.expect("back to always", r"^reply mode is now always: the assistant answers every message$")
        rc, out, err = run_parley(["--name", "carol", "send", "--session", sid, "from a script"], env)
        t.eq("send --name: exit 0", (rc, out, err), (0, "from a script\n", ""))
        b.expect("B sees carol's message", r"^carol: from a script$")
        rc, out, err = run_parley(["history", sid], env)
        t.match("history shows authors' names", out,
                r"(?m)^#\d+ \S+Z carol: from a script\n#\d+ \S+Z assistant: from a script\n\Z")

        a.quit("A")
        b.expect("B sees alice leave under her new name", r"^Alice Liddell left \(1 here\)$")
        b.quit("B")
    finally:
        a.close()
        if b:
            b.close()

    # a name of 65 characters given at start: refused with a clear message, exit 2
    long_name = "n" * 65
    want = ("parley: --name: a name is 1 to 64 characters; this one has 65; give a shorter name "
            "(or none for your login name)\n")
    rc, out, err = run_parley(["--name", long_name, "send", "hi"], env)
    t.eq("send --name with 65 characters: exit 2 and the reason", (rc, out, err), (2, "", want))
    rc, out, err = run_parley(["send", "hi"], dict(env, PARLEY_NAME=long_name))
    t.eq("PARLEY_NAME with 65 characters: the same", (rc, out, err), (2, "", want))
    p = Pane(t, env, args=["--name", long_name], name="c")
    try:
        t.eq("interactive --name with 65 characters: exit 2", p.dead_status(), 2)
        t.ok("interactive: the reason on screen", want.strip() in p.screen(), p.screen()[-800:])
    finally:
        p.close()
    rc, out, err = run_parley(["--name", "é" * 64, "send", "sixty-four"], env)
    t.eq("a name of 64 two-byte characters is fine", (rc, out), (0, "sixty-four\n"))
    broker.stop()
    rest.stop()
    test_quota(t)


def test_quota(t):
    """Over the key's quota a chat is refused: the client shows the server's message."""
    quota = {"--quota-messages-per-day": "1"}
    rest = parley.Rest(t, flags=quota)
    code, out, err = parley.run_cli("parley-rest", ["--db", rest.db, "--notify-socket",
                                                    rest.notify_socket, "keys", "add", "dora"])
    t.eq("keys add dora: exit 0", code, 0)
    key = out.strip()
    broker = parley.Broker(t, flags=quota, tmpdir=rest.tmpdir, port=rest.ws_port)
    p = Pane(t, client_env(rest, broker), args=["--api-key", key, "--name", "dora"], name="q")
    try:
        p.expect("connected with the key", r"^created session [0-9a-f]{16};")
        p.line("one")
        p.expect("the first message of the day is answered", r"^assistant: one$")
        p.line("two")
        p.expect("the second is refused with the server's message",
                 r"^quota exceeded: this API key has sent its 1 messages for today \(its quota per "
                 r"UTC day\); the quota resets at \d{4}-\d\d-\d\dT00:00:00Z, in .+$")
        p.expect("and the client says it was not stored", r"^\(that message was not stored\)$")
        p.line("/mode off")
        p.expect("/mode with the API key", r"^reply mode is now off: the assistant answers no "
                 r"message \(/regenerate still asks it\)$")
        p.quit("quota client")
    finally:
        p.close()
    broker.stop()
    rest.stop()


if __name__ == "__main__":
    parley.run(main)
