-- 001: sessions, messages, counters, the reply queue and the broker's live figures.
-- Read it with: sqlite3 var/parley.db 'select role, content from messages'

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,              -- 16 lowercase hex characters
    title       TEXT,
    model       TEXT NOT NULL,
    channel     TEXT UNIQUE,                   -- envelope channel name, NULL for plain sessions
    created_at  TEXT NOT NULL,                 -- ISO-8601 UTC, 2026-01-20T12:34:56.789Z
    updated_at  TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0   -- kept in step with messages by the DB layer
);
CREATE INDEX sessions_updated ON sessions(updated_at DESC);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: `since` relies on it
    session_id    TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'event')),
    content       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    connection_id TEXT,                        -- who sent it, NULL for REST
    client_msg_id TEXT,                        -- the sender's id for safe resend
    thread_id     TEXT,                        -- envelope chat_message thread
    -- assistant replies
    model         TEXT,
    status        TEXT CHECK (status IN ('complete', 'stopped', 'error', 'incomplete')),
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    duration_ms   INTEGER,
    reasoning     TEXT,                        -- reasoning text kept apart from the reply
    error         TEXT                         -- why a reply ended early
);
CREATE INDEX messages_session ON messages(session_id, id);
CREATE UNIQUE INDEX messages_client_msg ON messages(session_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;

-- Monotonic figures that outlive rows: sessions_created, replies_total, reply_ms_total.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
);
INSERT INTO counters(name, value) VALUES ('sessions_created', 0), ('replies_total', 0),
    ('reply_ms_total', 0);

-- User messages waiting for an assistant reply (REST `reply: true`, or chat queued while
-- another reply streams). The broker deletes a row when the reply is committed, so a reply
-- asked for while the broker was down is produced when it comes back.
CREATE TABLE reply_queue (
    message_id  INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL
);

-- The broker's live figures, published about once a second, read by REST for /health,
-- /stats and /sessions. A heartbeat older than a few seconds means the broker is down.
CREATE TABLE broker_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL,             -- unix milliseconds of the last publish
    connections  INTEGER NOT NULL,
    model        TEXT
);
CREATE TABLE live_members (
    session_id TEXT PRIMARY KEY,
    clients    INTEGER NOT NULL
);

CREATE TABLE api_keys (
    name        TEXT PRIMARY KEY,
    salt        TEXT NOT NULL,
    hash        TEXT NOT NULL,                 -- hex SHA-256 of salt || key
    created_at  TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at  TEXT
);
