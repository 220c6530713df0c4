-- 002: live figures per broker node (SPEC 8: several brokers over one database). Each broker
-- keeps its own heartbeat row, named by its --node-id (default HOSTNAME:PORT), and its own
-- member counts; REST sums over the brokers whose heartbeat is fresh. The old single row
-- is a heartbeat, not history: it is dropped, and the next broker to start writes anew.
DROP TABLE live_members;
DROP TABLE broker_state;
CREATE TABLE broker_state (
    node_id      text NOT NULL PRIMARY KEY,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_ms bigint NOT NULL,               -- unix milliseconds of the last publish
    connections  bigint NOT NULL,
    model        text
);
-- A node's members go with it (reset, clean stop, forgotten after a minute of silence).
CREATE TABLE live_members (
    session_id text NOT NULL,
    node_id    text NOT NULL REFERENCES broker_state(node_id) ON DELETE CASCADE,
    clients    bigint NOT NULL,
    PRIMARY KEY (session_id, node_id)
);
CREATE INDEX live_members_node ON live_members(node_id);
