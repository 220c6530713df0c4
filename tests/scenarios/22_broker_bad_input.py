"""Broker bad input (SPEC section 6): invalid JSON, non-objects and binary frames are
bad_request and the connection stays open; unknown types; missing and wrong-typed fields
name the field; unknown sessions; actions that need a session; messages at and above
--max-message-size (whole and fragmented): the limit passes, one byte more closes 1009."""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import parley  # noqa: E402
from parley import Broker  # noqa: E402

LIMIT = 1024
ERROR_KEYS = {"type", "code", "message", "request_type"}


def connect(b, name):
    c = b.client(name)
    c.id = c.expect(type="connected").get("connection_id")
    return c


def check_err(t, c, name, send, code, request_type=None, mentions=None):
    """Sends `send`, expects exactly one error with `code`, then proves the connection is
    still usable with ping/pong."""
    c.send(send)
    try:
        e = c.expect(type="error")
    except parley.ExpectError as ex:
        t.fail("%s: error %s" % (name, code), str(ex))
        return
    t.eq("%s: code" % name, e.get("code"), code)
    t.ok("%s: error has type, code, message (+ request_type)" % name,
         {"type", "code", "message"} <= set(e) <= ERROR_KEYS, repr(e))
    t.ok("%s: non-empty message" % name,
         isinstance(e.get("message"), str) and e["message"].strip() != "", repr(e))
    if request_type is None:
        t.ok("%s: no request_type" % name, "request_type" not in e, repr(e))
    elif request_type is not False:
        t.ok("%s: request_type %r (when given)" % (name, request_type),
             e.get("request_type", request_type) == request_type, repr(e))
    if mentions:
        t.ok("%s: message names %r" % (name, mentions), mentions in str(e.get("message")),
             repr(e.get("message")))
    t.ok("%s: connection stays open (ping -> pong)" % name, c.ping_ok(), "no pong; closed=%r"
         % c.close_code)
    extra = c.quiet(0.05)
    t.eq("%s: nothing else was sent" % name, extra, [])


def test_malformed(t, b):
    c = connect(b, "C")
    for name, data in (("invalid JSON", "not json"), ("truncated JSON", '{"type": "ping"'),
                       ("empty text frame", ""), ("JSON array", "[1, 2]"),
                       ("JSON string", '"ping"'), ("JSON number", "42"), ("JSON null", "null"),
                       ("binary frame carrying valid JSON", b'{"type":"ping"}'),
                       ("binary frame", b"\x00\x01\x02\xff")):
        check_err(t, c, name, data, "bad_request")
    check_err(t, c, "deeply nested array", "[" * 500 + "]" * 500, "bad_request")
    check_err(t, c, "object nested 150 deep", '{"a":' * 150 + "1" + "}" * 150,
              "invalid_field", None, "type")
    # valid JSON with an escaped NUL in a string: invalid_field naming the field
    c.send('{"type":"bogus\\u0000x"}')
    e = c.expect(type="error")
    t.eq("type with an escaped NUL: invalid_field", e.get("code"), "invalid_field")
    t.ok("type with an escaped NUL: the message names 'type'", "'type'" in e.get("message", ""),
         repr(e))
    t.ok("type with an escaped NUL: connection stays open", c.ping_ok(), "no pong")
    check_err(t, c, "object without type", {}, "invalid_field", None, "type")
    check_err(t, c, "type is a number", {"type": 5}, "invalid_field", None, "type")
    check_err(t, c, "type is null", {"type": None}, "invalid_field", None, "type")
    check_err(t, c, "unknown type", {"type": "bogus"}, "unknown_type", "bogus")
    check_err(t, c, "unknown type (case differs)", {"type": "PING"}, "unknown_type", "PING")
    c.close()


def test_fields(t, b):
    c = connect(b, "C")
    # actions needing a session, with none joined
    for typ in ("chat", "stop", "typing_start", "typing_stop", "leave_session"):
        msg = {"type": typ}
        if typ == "chat":
            msg["message"] = "hello"
        check_err(t, c, "%s with no session joined" % typ, msg, "not_in_session", typ)
    # join_session
    check_err(t, c, "join_session without session_id", {"type": "join_session"},
              "invalid_field", "join_session", "session_id")
    check_err(t, c, "join_session session_id number", {"type": "join_session", "session_id": 5},
              "invalid_field", "join_session", "session_id")
    check_err(t, c, "join_session unknown 16-hex id",
              {"type": "join_session", "session_id": "0123456789abcdef"},
              "session_not_found", "join_session")
    check_err(t, c, "join_session malformed id",
              {"type": "join_session", "session_id": "../etc/passwd"},
              "session_not_found", "join_session")
    sid = c.create_session()
    check_err(t, c, "join_session since is a string",
              {"type": "join_session", "session_id": sid, "since": "5"},
              "invalid_field", "join_session", "since")
    check_err(t, c, "join_session since negative",
              {"type": "join_session", "session_id": sid, "since": -1},
              "invalid_field", "join_session", "since")
    check_err(t, c, "join_session since fractional",
              {"type": "join_session", "session_id": sid, "since": 1.5},
              "invalid_field", "join_session", "since")
    # create_session
    check_err(t, c, "create_session title number", {"type": "create_session", "title": 5},
              "invalid_field", "create_session", "title")
    check_err(t, c, "create_session model_id number",
              {"type": "create_session", "model_id": 5}, "invalid_field", "create_session",
              "model_id")
    check_err(t, c, "create_session model_id empty",
              {"type": "create_session", "model_id": ""}, "invalid_field", "create_session",
              "model_id")
    # chat (now in a session)
    check_err(t, c, "chat without message", {"type": "chat"}, "invalid_field", "chat",
              "message")
    check_err(t, c, "chat message number", {"type": "chat", "message": 5}, "invalid_field",
              "chat", "message")
    check_err(t, c, "chat message object", {"type": "chat", "message": {"a": 1}},
              "invalid_field", "chat", "message")
    check_err(t, c, "chat message empty", {"type": "chat", "message": ""}, "invalid_field",
              "chat", "message")
    check_err(t, c, "chat client_msg_id number",
              {"type": "chat", "message": "x", "client_msg_id": 7}, "invalid_field", "chat",
              "client_msg_id")
    check_err(t, c, "chat client_msg_id empty",
              {"type": "chat", "message": "x", "client_msg_id": ""}, "invalid_field", "chat",
              "client_msg_id")
    check_err(t, c, "chat client_msg_id of 129 chars",
              {"type": "chat", "message": "x", "client_msg_id": "k" * 129}, "invalid_field",
              "chat", "client_msg_id")
    check_err(t, c, "chat session_id number", {"type": "chat", "message": "x", "session_id": 1},
              "invalid_field", "chat", "session_id")
    # SPEC 6: a session that does not exist is session_not_found, for every action
    # naming one; not_in_session is for an existing session not joined (below)
    for typ, extra in (("chat", {"message": "x"}), ("typing_start", {}), ("typing_stop", {}),
                       ("stop", {}), ("leave_session", {})):
        for name, sid_bad in (("unknown", "0123456789abcdef"), ("malformed", "not-an-id"),
                              ("emoji", "\U0001f600" * 40)):
            msg = dict(extra, type=typ, session_id=sid_bad)
            check_err(t, c, "%s naming a%s %s session" % (typ, "n" if name[0] in "aeiou"
                                                          else "", name),
                      msg, "session_not_found", typ)
    other = connect(b, "O")
    s2 = other.create_session()
    check_err(t, c, "chat naming an existing session not joined",
              {"type": "chat", "message": "x", "session_id": s2}, "not_in_session", "chat")
    check_err(t, c, "typing_start naming a session not joined",
              {"type": "typing_start", "session_id": s2}, "not_in_session", "typing_start")
    check_err(t, c, "stop naming a session not joined",
              {"type": "stop", "session_id": s2}, "not_in_session", "stop")
    check_err(t, c, "leave_session naming a session not joined",
              {"type": "leave_session", "session_id": s2}, "not_in_session", "leave_session")
    t.eq("errors stored nothing", parley.sql(b.db, "select count(*) from messages;")[1], ["0"])
    # since beyond the newest id: an empty replay
    j = c.join(sid, since=10 ** 12)
    t.eq("join since far beyond the newest id: empty replay", j.get("messages"), [])
    # a message with a NUL character: invalid_field naming 'message', nothing stored
    c.send('{"type":"chat","message":"a\\u0000b"}')
    f = c.expect(pred=lambda m: m.get("type") == "error" or m.get("update_type") ==
                 "message_added")
    t.eq("chat with an escaped NUL: invalid_field", f.get("code"), "invalid_field")
    t.ok("chat with an escaped NUL: the message names 'message'",
         "'message'" in f.get("message", ""), repr(f))
    t.ok("chat with an escaped NUL: connection stays open", c.ping_ok(), "no pong")
    # a client_msg_id of exactly 128 is fine
    ack = c.chat("ok", client_msg_id="k" * 128)
    t.eq("chat client_msg_id of 128 chars: accepted", ack["message"].get("client_msg_id"),
         "k" * 128)
    # unknown extra fields are ignored
    ack = c.chat("extra fields", extra={"x": 1})
    t.eq("chat with an unknown extra field: accepted", ack["message"]["content"], "extra fields")
    c.close()
    other.close()


def chat_frame(size, char="x"):
    """A chat message whose JSON text is exactly `size` bytes of UTF-8."""
    base = len(json.dumps({"type": "chat", "message": ""}, ensure_ascii=False).encode())
    n = size - base
    w = len(char.encode())
    text = "x" * (n % w) + char * (n // w)
    s = json.dumps({"type": "chat", "message": text}, ensure_ascii=False)
    assert len(s.encode()) == size
    return s, text


def fragments(s, n=100):
    b = s.encode()
    # split on byte boundaries; websockets needs str fragments, so split the str instead
    parts, cur = [], ""
    for ch in s:
        cur += ch
        if len(cur.encode()) >= n:
            parts.append(cur)
            cur = ""
    if cur:
        parts.append(cur)
    assert "".join(parts).encode() == b
    return parts


def test_size(t, b):
    for label, char in (("ASCII", "x"), ("UTF-8 two-byte", "é")):
        for frag in (False, True):
            how = "%s, %s" % (label, "fragmented" if frag else "one frame")
            c = connect(b, "C")
            sid = c.create_session()
            s, text = chat_frame(LIMIT, char)
            if frag:
                c.send_fragments(fragments(s))
            else:
                c.send(s)
            try:
                ack = c.expect(type="session_update", update_type="message_added")
                t.eq("exactly --max-message-size bytes (%s): accepted" % how,
                     ack["message"]["content"], text)
            except parley.ExpectError as e:
                t.fail("exactly --max-message-size bytes (%s): accepted" % how, str(e))
            s, _ = chat_frame(LIMIT + 1, char)
            if frag:
                c.send_fragments(fragments(s))
            else:
                c.send(s)
            t.eq("--max-message-size + 1 byte (%s): close 1009" % how,
                 c.wait_closed(5), 1009)
            t.eq("over the limit (%s): nothing stored" % how,
                 parley.sql(b.db, "select count(*) from messages where session_id = '%s';"
                            % sid)[1], ["1"])
    # many small fragments adding up to far more than the limit
    c = connect(b, "C")
    s, _ = chat_frame(LIMIT * 4)
    c.send_fragments(fragments(s, 64))
    t.eq("fragments of 64 bytes adding up to 4x the limit: close 1009", c.wait_closed(5), 1009)
    # a binary frame above the limit
    c = connect(b, "C")
    c.send(b"\x00" * (LIMIT + 1))
    t.eq("binary frame above the limit: close 1009", c.wait_closed(5), 1009)
    # a single huge frame
    c = connect(b, "C")
    s, _ = chat_frame(LIMIT * 64)
    c.send(s)
    t.eq("a 64 KiB frame with a 1 KiB limit: close 1009", c.wait_closed(5), 1009)
    d = connect(b, "D")
    t.ok("after the 1009 closes, the broker still serves new connections", d.ping_ok(),
         "no pong")
    d.close()


def main(t):
    b = Broker(t, llm="none", flags={"--max-message-size": str(LIMIT),
                                     "--rate-limit": "1000", "--rate-burst": "2000"})
    with t.section("malformed"):
        test_malformed(t, b)
    with t.section("fields"):
        test_fields(t, b)
    with t.section("size"):
        test_size(t, b)
    parley.close_clients()
    b.stop()


parley.run(main)
