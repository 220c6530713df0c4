-- 005: the reply policy of a session (SPEC 9): `always` (the assistant answers every chat),
-- `mention` (only a chat that mentions @assistant or @ + the model's name), `off`.
-- Sessions made before it answer every chat, as they did.
ALTER TABLE sessions ADD COLUMN reply_mode text NOT NULL DEFAULT 'always'
    CHECK (reply_mode IN ('always', 'mention', 'off'));
