"""REST: full-text search of a session's history, export as JSON and Markdown, and
GET /metrics, against a running parley-rest (no broker)."""

import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Rest, check_error  # noqa: E402

TEXTS = ["hello world", 'the "quick" brown fox', "another line", "Quick thinking",
         "a line with\nnewline and ünïcode"]


def ids_of(body):
    return [m["id"] for m in body["messages"]]


def search(t, rest, sid, ids):
    def q(query, **extra):
        args = "&".join(["q=" + query] + ["%s=%s" % kv for kv in extra.items()])
        return rest.get("/sessions/%s/messages?%s" % (sid, args))

    r = q("quick")
    t.eq("search 'quick': 200", r.status, 200)
    t.eq("search 'quick': both messages, oldest first (case-insensitive)", ids_of(r.body),
         [ids[1], ids[3]])
    t.eq("search: the fields of each message", sorted(r.body["messages"][0]),
         ["content", "created_at", "id", "role", "seq"])
    t.eq("search: seq of each match (SPEC 7: 1, 2, 3, ... in the session)",
         [m["seq"] for m in r.body["messages"]], [2, 4])
    t.eq("search: content as stored", r.body["messages"][0]["content"], TEXTS[1])
    t.eq("search: query echoed, count", (r.body["query"], r.body["count"]), ("quick", 2))
    t.eq("search 'brown fox': every word required", ids_of(q("brown%20fox").body), [ids[1]])
    t.eq("search 'brown cat': no match", ids_of(q("brown%20cat").body), [])
    t.eq("search 'quick' limit=1: the newest match", ids_of(q("quick", limit=1).body), [ids[3]])
    t.eq("search 'quick' before the newest match: the older one",
         ids_of(q("quick", before=ids[3]).body), [ids[1]])
    t.eq("search 'line': two, including the one with a newline", ids_of(q("line").body),
         [ids[2], ids[4]])
    # what a person types is never an FTS5 syntax error
    for query in ["%22", "quick%22", "AND%20OR%20NOT", "*", "(", "NEAR(a%20b)", "col:x", "-"]:
        r = q(query)
        t.eq("search %r: 200, never a syntax error" % query, r.status, 200)
    t.eq("search with only spaces: like no q (newest messages)", ids_of(q("%20%20").body), ids)
    r = rest.get("/sessions/%s/messages" % sid)
    t.eq("no q: the newest messages, oldest first", ids_of(r.body), ids)
    t.eq("no q: query is null", r.body["query"], None)
    check_error(t, "q over 500 characters", q("x" * 501), 400, "invalid_field", "'q'")
    t.eq("q of exactly 500 characters: 200", q("x" * 500).status, 200)
    check_error(t, "search limit=0", q("quick", limit=0), 400, "invalid_field", "'limit'")
    check_error(t, "search in an unknown session",
                rest.get("/sessions/0123456789abcdef/messages?q=quick"), 404,
                "session_not_found")


def export(t, rest, sid, ids):
    r = rest.get("/sessions/%s/export" % sid)
    t.eq("export: 200 JSON by default", (r.status, r.headers.get("content-type")),
         (200, "application/json"))
    t.eq("export: a download named after the session", r.headers.get("content-disposition"),
         'attachment; filename="parley-%s.json"' % sid)
    t.eq("export json: the session", (r.body["session_id"], r.body["title"]),
         (sid, "Export me"))
    t.eq("export json: every message in order", [m["content"] for m in r.body["messages"]],
         TEXTS)
    t.eq("export json: message ids", [m["id"] for m in r.body["messages"]], ids)
    r2 = rest.get("/sessions/%s/export?format=json" % sid)
    t.eq("export format=json: the same body", r2.body, r.body)
    r = rest.get("/sessions/%s/export?format=markdown" % sid, decode=False)
    t.eq("export markdown: 200 text/markdown",
         (r.status, r.headers.get("content-type")), (200, "text/markdown; charset=utf-8"))
    t.eq("export markdown: named .md", r.headers.get("content-disposition"),
         'attachment; filename="parley-%s.md"' % sid)
    md = r.body.decode("utf-8")
    t.ok("export markdown: the title as a heading", md.startswith("# Export me\n"), md[:80])
    t.ok("export markdown: every message's text, in order",
         all(md.index(TEXTS[i]) < md.index(TEXTS[i + 1]) for i in range(len(TEXTS) - 1)),
         md)
    t.eq("export markdown: one heading per message",
         len(re.findall(r"^### user · \d{4}-\d\d-\d\dT", md, re.M)), len(TEXTS))
    check_error(t, "export format=xml", rest.get("/sessions/%s/export?format=xml" % sid), 400,
                "invalid_field", "'format'")
    check_error(t, "export an unknown session", rest.get("/sessions/0123456789abcdef/export"),
                404, "session_not_found")
    # a long history comes out whole (it is read a page of 1,000 at a time)
    big = rest.new_session(title="big")
    for i in range(1203):
        rest.add_message(big, "m%d" % i)
    r = rest.get("/sessions/%s/export" % big)
    t.eq("export of 1,203 messages: all of them, in order",
         [m["content"] for m in r.body["messages"]], ["m%d" % i for i in range(1203)])
    return big


def metrics(t, rest, n_sessions, n_messages):
    r = rest.get("/metrics", decode=False)
    t.eq("metrics: 200 Prometheus text",
         (r.status, r.headers.get("content-type")), (200, "text/plain; version=0.0.4; charset=utf-8"))
    text = r.body.decode("utf-8")
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split(" ")
            v = float(value)
            values[name] = int(v) if v.is_integer() else v
    t.eq("metrics: the families", sorted(values), sorted([
        "parley_uptime_seconds", "parley_http_requests_total",
        "parley_http_requests_failed_total", "parley_sessions_created_total",
        "parley_messages", "parley_assistant_replies_total",
        "parley_assistant_reply_seconds_total", "parley_broker_up", "parley_brokers",
        "parley_websocket_connections", "parley_active_sessions"]))
    t.ok("metrics: every family has HELP and TYPE",
         all("# HELP %s " % n in text and "# TYPE %s " % n in text for n in values), text)
    t.eq("metrics: sessions created", values["parley_sessions_created_total"], n_sessions)
    t.eq("metrics: messages stored", values["parley_messages"], n_messages)
    t.eq("metrics: no broker", (values["parley_broker_up"], values["parley_brokers"],
                                values["parley_websocket_connections"]), (0, 0, 0))
    t.ok("metrics: the per-broker families are declared, with no sample",
         "# TYPE parley_broker_connections gauge" in text and
         "# TYPE parley_broker_last_seen_seconds gauge" in text, text)
    t.eq("metrics: no replies yet", values["parley_assistant_replies_total"], 0)
    t.ok("metrics: requests counted", values["parley_http_requests_total"] > 1200,
         repr(values["parley_http_requests_total"]))
    t.eq("metrics: failures counted (the five 400s and 404s above)",
         values["parley_http_requests_failed_total"], 5)


def main(t):
    rest = Rest(t, flags={"--log-level": "info"})
    sid = rest.new_session(title="Export me")
    ids = [rest.add_message(sid, text)["id"] for text in TEXTS]
    with t.section("search"):
        search(t, rest, sid, ids)
    with t.section("export"):
        export(t, rest, sid, ids)
    with t.section("metrics"):
        metrics(t, rest, 2, len(TEXTS) + 1203)
    rest.stop()


parley.run(main)
