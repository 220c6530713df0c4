-- 001 (PostgreSQL): the whole schema, as schema/001..005 build it on SQLite, in one
-- migration: sessions, messages with their seq and search vector, counters, the reply
-- queue, the broker's live figures and API keys. Same tables and columns as on SQLite;
-- timestamps are timestamptz (the service reads them back as 2026-01-20T12:34:56.789Z).
-- The schema_version table (one row: version) is made by the migrator (common/db_pg.c),
-- not here. The role in --db needs CREATE on the database's schema (usually public) for
-- the first start.
--
-- Read it with psql, e.g.:
--   psql "$PARLEY_DB" -c 'select seq, role, left(content, 60) from messages
--                          where session_id = '\''SESSION'\'' order by seq'
--   psql "$PARLEY_DB" -c 'select id, title, message_count, updated_at from sessions
--                          order by updated_at desc limit 20'
--   search as the service does: ... where content_tsv @@ plainto_tsquery('simple', 'words')

CREATE TABLE sessions (
    id            text PRIMARY KEY,             -- 16 lowercase hex characters
    title         text,
    model         text NOT NULL,
    channel       text,                         -- envelope channel name, NULL for plain sessions
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    message_count bigint NOT NULL DEFAULT 0,    -- kept in step with messages by the DB layer
    last_seq      bigint NOT NULL DEFAULT 0     -- the seq of the newest message ever stored:
                                                -- not reset by a clear, so a seq is never reused
);
CREATE INDEX sessions_updated ON sessions(updated_at DESC);
-- unique where set: plain sessions (most) have no entry to update with every message
CREATE UNIQUE INDEX sessions_channel ON sessions(channel) WHERE channel IS NOT NULL;
-- vacuum_truncate off (here and on messages): a table emptied by deletes keeps its pages,
-- so the planner, planning the service's prepared statements, never takes it for an
-- empty table on which a sequential scan costs nothing (a plan it would keep while the
-- table grows); and no vacuum takes the exclusive lock that truncating needs.
ALTER TABLE sessions SET (vacuum_truncate = false);

CREATE TABLE messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    session_id    text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq           bigint NOT NULL,              -- 1, 2, 3, ... within the session, in commit order
    role          text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'event')),
    content       text NOT NULL,
    created_at    timestamptz NOT NULL,
    connection_id text,                         -- who sent it, NULL for REST
    client_msg_id text,                         -- the sender's id for safe resend
    thread_id     text,                         -- envelope chat_message thread
    -- assistant replies
    model         text,
    status        text CHECK (status IN ('complete', 'stopped', 'error', 'incomplete')),
    prompt_tokens bigint,
    completion_tokens bigint,
    duration_ms   bigint,
    reasoning     text,                         -- reasoning text kept apart from the reply
    error         text,                         -- why a reply ended early
    -- full-text search (GET /sessions/{id}/messages?q=): words as they are, lowercased.
    -- Only the first 200000 characters of a message: a tsvector holds at most 1 MB of
    -- lexemes and positions, which a 1 MiB assistant reply of many distinct words exceeds
    -- (the insert would fail); a chat message (64 KiB at most) is always whole.
    content_tsv   tsvector GENERATED ALWAYS AS (to_tsvector('simple', left(content, 200000))) STORED,
    UNIQUE (session_id, seq)
);
CREATE INDEX messages_session ON messages(session_id, id);
CREATE UNIQUE INDEX messages_client_msg ON messages(session_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_search ON messages USING gin (content_tsv);
ALTER TABLE messages SET (vacuum_truncate = false);

-- Monotonic figures that outlive rows: sessions_created, replies_total, reply_ms_total.
CREATE TABLE counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL DEFAULT 0
);
INSERT INTO counters(name, value) VALUES ('sessions_created', 0), ('replies_total', 0),
    ('reply_ms_total', 0);

-- User messages waiting for an assistant reply (REST `reply: true`, or chat queued while
-- another reply streams). The broker deletes a row when the reply is committed, so a reply
-- asked for while the broker was down is produced when it comes back.
CREATE TABLE reply_queue (
    message_id  bigint PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    session_id  text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL
);
CREATE INDEX reply_queue_session ON reply_queue(session_id);

-- The broker's live figures, published about once a second, read by REST for /health,
-- /stats and /sessions. A heartbeat older than a few seconds means the broker is down.
CREATE TABLE broker_state (
    id           integer PRIMARY KEY CHECK (id = 1),
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_ms bigint NOT NULL,               -- unix milliseconds of the last publish
    connections  bigint NOT NULL,
    model        text
);
CREATE TABLE live_members (
    session_id text PRIMARY KEY,
    clients    bigint NOT NULL
);

-- API keys: a random salt and the hex SHA-256 of salt || key; lookup is the key's first
-- 8 hex characters (after "pk_"), not secret, so checking a key costs one lookup and one
-- hash. NULL lookup: a key made before lookups, checked the old way.
CREATE TABLE api_keys (
    name         text PRIMARY KEY,
    salt         text NOT NULL,
    hash         text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    lookup       text
);
CREATE INDEX api_keys_lookup ON api_keys(lookup);
