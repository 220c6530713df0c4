-- 005: every message gets its place in its session, seq: 1, 2, 3, ... in commit order,
-- never reused (sessions.last_seq keeps counting after a clear). It is assigned in the
-- message's own transaction by the UPDATE of its session row, so with several writers
-- (PostgreSQL) commit order and seq order agree. Existing messages are numbered in id
-- order, which is their commit order here: SQLite has one writer at a time.
ALTER TABLE sessions ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN seq INTEGER;
UPDATE messages SET seq = r.n
  FROM (SELECT id, row_number() OVER (PARTITION BY session_id ORDER BY id) AS n FROM messages) AS r
 WHERE messages.id = r.id;
UPDATE sessions SET last_seq = coalesce((SELECT max(seq) FROM messages
                                          WHERE messages.session_id = sessions.id), 0);
CREATE UNIQUE INDEX messages_seq ON messages(session_id, seq);
