-- 011: quotas per API key (SPEC 9). Each user message stored with a key counts one for that
-- key in its UTC day, in the transaction that stores it; an assistant reply's prompt and
-- completion tokens count for the key of the message it answers. Over a quota
-- (--quota-messages-per-day, --quota-tokens-per-day) a chat is refused and nothing is
-- stored. Read it with: sqlite3 var/parley.db 'select * from key_usage order by day'
CREATE TABLE key_usage (
    key_name TEXT NOT NULL,             -- api_keys.name (never reused: revoked keys keep theirs)
    day      TEXT NOT NULL,             -- the UTC day, 2026-12-08
    messages INTEGER NOT NULL DEFAULT 0,
    tokens   INTEGER NOT NULL DEFAULT 0, -- prompt + completion tokens of the replies
    PRIMARY KEY (key_name, day)
);
ALTER TABLE messages ADD COLUMN key_name TEXT;  -- the API key a user message came with; NULL: none
