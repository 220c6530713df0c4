"""Helpers shared by the LLM provider scenarios (tests/scenarios/3*_llm_*.py): a broker
wired to the fake LLM server, reading one reply or one failure, and the stored rows
(read with the sqlite3 shell, or psql in a PostgreSQL pass)."""

import json
import subprocess
import time

import parley
from parley import Broker, one_of

SQLITE = "/usr/bin/sqlite3"
ROW_COLS = ("id", "session_id", "role", "content", "model", "status", "prompt_tokens",
            "completion_tokens", "duration_ms", "reasoning", "error", "author_name")

# SPEC 9: the sentence the system prompt gains when a user message of the context has an
# author (broker/llm.h LLM_ROOM_PROMPT), after the configured prompt and a blank line
ROOM = ("This is a chat room: several people may talk with you here. Each user message "
        "begins with its author's name and a colon (\"Name: message\"). Do not begin your "
        "replies with a name.")


def system_text(prompt=None):
    """The system prompt sent when the context has an author."""
    return prompt + "\n\n" + ROOM if prompt else ROOM


def guest(conn_id):
    """The default name of a connection without one (SPEC 9)."""
    return "guest-" + conn_id[:4]


def llm_name(name):
    """An ASCII-only name as OpenAI's name field holds it (common/names.c name_llm; other
    names are asserted literally in 38_llm_authors.py)."""
    assert all(ord(ch) < 128 for ch in name), name
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "_"
                   for ch in name)[:64] or "_"


def llm_broker(t, provider, url, tmpdir=None, port=None, name=None, **flags):
    """A parley-broker with --llm provider --llm-url url; flags given as
    llm_model="m" -> --llm-model m (None drops a flag)."""
    f = {"--llm-url": url}
    for k, v in flags.items():
        f["--" + k.replace("_", "-")] = v
    return Broker(t, flags=f, llm=provider, tmpdir=tmpdir, port=port,
                  name=name or "parley-broker(%s)" % provider, ready_timeout=20.0)


def connect(b, name):
    c = b.client(name)
    ev = c.expect(type="connected")
    c.id = ev.get("connection_id")
    c.connected = ev
    return c


def rows(db, sid, role=None):
    """The session's messages as dicts (ROW_COLS), oldest first, read with the sqlite3 shell
    (-json), or on PostgreSQL with psql (json_agg: numbers, strings and nulls alike)."""
    q = "select %s from messages where session_id='%s'%s order by id" % (
        ", ".join(ROW_COLS), sid, " and role='%s'" % role if role else "")
    if parley.is_pg(db):
        code, lines = parley.sql(db, "select coalesce(json_agg(r order by r.id), '[]') "
                                 "from (%s) r" % q)
        if code != 0:
            raise RuntimeError("psql: %s" % "\n".join(lines))
        return json.loads("\n".join(lines))
    p = subprocess.run([SQLITE, "-batch", "-json", db, q], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=10)
    if p.returncode != 0:
        raise RuntimeError("sqlite3: %s" % p.stderr.decode("utf-8", "replace"))
    out = p.stdout.decode("utf-8").strip()
    return json.loads(out) if out else []


def chat_and_read(c, sid, text, timeout=30.0):
    """Sends a chat, returns (message_added for it, frames of the reply)."""
    added = c.chat(text)
    return added, c.read_reply(sid, timeout=timeout)


def chunk_texts(frames):
    return [f.get("text") for f in frames if f.get("type") == "chunk" and not f.get("is_final")]


def read_failure(c, sid, timeout=20.0, settle=0.6, want_complete=False):
    """After a chat whose reply fails: waits for the llm error (and with want_complete for
    a response_complete too, up to 10 s), then `settle` seconds more.
    Returns (error frame or None, every reply frame for sid in order, response_complete
    frame or None)."""
    types = one_of("status", "response_start", "chunk", "response_complete", "error")
    frames = []
    err = None
    deadline = time.monotonic() + timeout
    while err is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            f = c.expect(timeout=left, type=types)
        except parley.ExpectError:
            break
        if f.get("type") != "error" and f.get("session_id") != sid:
            continue
        frames.append(f)
        if f.get("type") == "error":
            err = f
    if want_complete and err is not None:
        deadline = time.monotonic() + 10.0
        while not any(f.get("type") == "response_complete" for f in frames):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                frames.append(c.expect(timeout=left, type=types, session_id=sid))
            except parley.ExpectError:
                break
    time.sleep(settle)
    frames += c.take_all(type=types, pred=lambda m: m.get("session_id") == sid)
    done = [f for f in frames if f.get("type") == "response_complete"]
    return err, frames, (done[0] if done else None)


def ping_rtt(c, timeout=5.0):
    t0 = time.monotonic()
    c.send({"type": "ping"})
    c.expect(timeout=timeout, type="pong")
    return time.monotonic() - t0


def wait_chunk(c, sid, number, timeout=10.0):
    """Waits until chunk `number` of the reply in sid has arrived at c, leaving every
    frame in c's buffer. Returns the time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        for f in c.pending():
            if (isinstance(f, dict) and f.get("type") == "chunk" and
                    f.get("session_id") == sid and (f.get("chunk_number") or 0) >= number):
                return time.monotonic()
        if time.monotonic() > deadline:
            raise parley.ExpectError("%s: chunk %d not seen within %.1f s; buffered %r" % (
                c.name, number, timeout, c.pending()[-5:]))
        time.sleep(0.005)


ERR_KEYS = {"type", "code", "message", "session_id"}


def normal_reply(t, fake, c, sid, db, name, script):
    """A chat answered by script: the chunks are its pieces, the row complete."""
    from parley import check_reply
    fake.play(script)
    _, frames = chat_and_read(c, sid, name)
    check_reply(t, name, frames, sid, text=script.text, chunks=script.pieces)
    got = rows(db, sid)
    last = got[-1] if got else {}
    t.eq("%s: stored reply" % name, (last.get("role"), last.get("content"), last.get("status")),
         ("assistant", script.text, "complete"))
    return frames


def failure_case(t, fake, c, sid, db, name, script, want_msg, partial=None, contains=False,
                 closed=False, after=True, timeout=20.0):
    """A chat whose reply fails as script makes it fail.
    want_msg: the exact error message (contains: a part of it).
    partial: None when nothing was streamed (nothing stored, no response_complete); a str:
    the exact text streamed and stored with status incomplete; True: whatever was streamed
    (non-empty). closed: the fake must see the broker close its connection.
    after: then a normal reply in the same session on the same connection."""
    fake.play(script)
    before = rows(db, sid, "assistant")
    n = fake.count()
    c.chat(name)
    err, frames, done = read_failure(c, sid, timeout=timeout,
                                     want_complete=partial is not None)
    t.diag("%s: error %r" % (name, err and err.get("message")))
    if t.ok("%s: an error arrives" % name, err is not None, "frames %r" % frames[-5:]):
        t.ok("%s: error fields type, code, message, session_id" % name,
             ERR_KEYS <= set(err) <= ERR_KEYS | {"request_type"}, repr(err))
        t.eq("%s: code llm_error" % name, err.get("code"), "llm_error")
        t.eq("%s: error session_id" % name, err.get("session_id"), sid)
        if contains:
            t.ok("%s: message contains %r" % (name, want_msg),
                 want_msg in (err.get("message") or ""), repr(err.get("message")))
        else:
            t.eq("%s: message" % name, err.get("message"), want_msg)
    stored = rows(db, sid)
    users = [r for r in stored if r["role"] == "user"]
    t.eq("%s: the user message stays stored" % name,
         users[-1]["content"] if users else None, name)
    after_rows = rows(db, sid, "assistant")
    streamed = "".join(chunk_texts(frames))
    if partial is None:
        t.eq("%s: no chunk" % name, streamed, "")
        t.eq("%s: no response_complete" % name, done, None)
        t.eq("%s: no assistant message stored" % name, len(after_rows), len(before))
    else:
        if partial is True:
            t.ok("%s: some text was streamed" % name, streamed != "", repr(frames[-3:]))
        else:
            t.eq("%s: the text streamed" % name, streamed, partial)
        t.eq("%s: response_complete with stopped:false" % name,
             done and done.get("stopped"), False)
        if t.eq("%s: one assistant message stored" % name, len(after_rows), len(before) + 1):
            row = after_rows[-1]
            t.eq("%s: stored partial text" % name, row.get("content"), streamed)
            t.eq("%s: stored status incomplete" % name, row.get("status"), "incomplete")
            t.ok("%s: stored error says why" % name, bool(row.get("error")), repr(row))
            t.eq("%s: response_complete.message_id" % name, done and done.get("message_id"),
                 row.get("id"))
    if closed:
        req = fake.requests[n] if fake.count() > n else None
        t.ok("%s: the broker closed the LLM connection" % name,
             req is not None and fake.wait_closed(req, 5) and req.closed_at is not None,
             req and (req.close_how, req.finished_at))
    if after:
        from llm_fake import Script
        normal_reply(t, fake, c, sid, db, "%s, then a normal reply" % name,
                     Script(["Back ", "to ", "normal."]))
    return err, frames
