-- 007: quotas per API key (SPEC 9). Each user message stored with a key counts one for that
-- key in its UTC day, in the transaction that stores it (an upsert that counts only under
-- the quota, so two processes racing at the limit cannot both pass: the second waits for
-- the row's lock and sees the first's count); an assistant reply's prompt and completion
-- tokens count for the key of the message it answers. The day is the processes' UTC day,
-- not the server's clock.
CREATE TABLE key_usage (
    key_name text NOT NULL,             -- api_keys.name (never reused: revoked keys keep theirs)
    day      date NOT NULL,             -- the UTC day
    messages bigint NOT NULL DEFAULT 0,
    tokens   bigint NOT NULL DEFAULT 0, -- prompt + completion tokens of the replies
    PRIMARY KEY (key_name, day)
);
ALTER TABLE messages ADD COLUMN key_name text;  -- the API key a user message came with; NULL: none
