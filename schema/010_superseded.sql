-- 010: regenerate (SPEC 9). A reply answered again stays stored with status `superseded`;
-- history shows only the newest reply to a user message unless asked for all of them.
-- reply_to links an assistant reply to the user message it answers (NULL for other rows);
-- replies stored before this migration are linked to the user message before them.
-- SQLite cannot alter a CHECK constraint: the table's stored definition is edited in place
-- (the procedure of https://sqlite.org/lang_altertable.html, section 7: a wider CHECK does
-- not change how rows are stored); RESET reloads the schema, and the ALTER below bumps the
-- schema cookie so that other connections reload it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, '''error'', ''incomplete'')', '''error'', ''incomplete'', ''superseded'')')
 WHERE type = 'table' AND name = 'messages';
PRAGMA writable_schema = RESET;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;  -- assistant replies: the user message answered
UPDATE messages SET reply_to = (SELECT u.id FROM messages u WHERE u.session_id = messages.session_id
                                   AND u.role = 'user' AND u.seq < messages.seq
                                 ORDER BY u.seq DESC LIMIT 1)
 WHERE role = 'assistant';
CREATE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
