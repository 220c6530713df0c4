-- 003: the search index is brought up to date after the commit, not inside it.
-- Indexing a message in its own transaction costs more than storing it (a new FTS5
-- segment a commit, merges, several more pages in the WAL), and a chat message's commit
-- is on the path to every member's screen. Rows with id <= search_state.indexed_id are in
-- messages_fts; later ones are indexed in batches by db_search_index (the broker's
-- database thread when it is idle, and every search before it runs, so a search still
-- sees every stored message). Deleting or editing a row that was never indexed must not
-- touch the index: an FTS5 'delete' of a row it does not hold corrupts it.
DROP TRIGGER messages_fts_ai;
DROP TRIGGER messages_fts_ad;
DROP TRIGGER messages_fts_au;
CREATE TABLE search_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_id INTEGER NOT NULL                -- every message with id <= this is indexed
);
INSERT INTO search_state(id, indexed_id) SELECT 1, coalesce(max(id), 0) FROM messages;
CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages
WHEN old.id <= (SELECT indexed_id FROM search_state) BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_au AFTER UPDATE OF content ON messages
WHEN old.id <= (SELECT indexed_id FROM search_state) BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
