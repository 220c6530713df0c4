-- 008: who said it (SPEC 9 "Names"): the display name of a message's author, as the
-- connection (or the REST caller) gave it when the message was stored. NULL for the
-- assistant's replies, for REST messages with no name and no key, and for rows older
-- than this migration.
ALTER TABLE messages ADD COLUMN author_name TEXT;
