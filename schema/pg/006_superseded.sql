-- 006: regenerate (SPEC 9), as schema/010_superseded.sql: status `superseded`, and reply_to
-- linking an assistant reply to the user message it answers.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('complete', 'stopped', 'error', 'incomplete', 'superseded'));
ALTER TABLE messages ADD COLUMN reply_to bigint;  -- assistant replies: the user message answered
UPDATE messages m SET reply_to = (SELECT u.id FROM messages u WHERE u.session_id = m.session_id
                                     AND u.role = 'user' AND u.seq < m.seq
                                   ORDER BY u.seq DESC LIMIT 1)
 WHERE m.role = 'assistant';
CREATE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
