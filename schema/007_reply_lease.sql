-- 007: the reply lease (SPEC 8: each reply is generated once, by one broker; if that broker
-- dies, another finishes the job). A broker takes a queued message's lease before it asks
-- the assistant (db_reply_claim) and renews it while the reply streams (db_reply_renew),
-- recording how far it got; a broker whose holder's lease ran out takes the reply over and
-- stores what had been streamed as an `incomplete` reply before answering anew.
ALTER TABLE reply_queue ADD COLUMN owner TEXT;        -- the node id (--node-id) generating the reply; NULL: nobody
ALTER TABLE reply_queue ADD COLUMN lease_until TEXT;  -- ISO-8601 UTC, compared as text: the owner's hold ends then
ALTER TABLE reply_queue ADD COLUMN response_id TEXT;  -- the owner's reply as the members know it (response_start)
ALTER TABLE reply_queue ADD COLUMN partial TEXT;      -- the text streamed so far, as of the last renewal
ALTER TABLE reply_queue ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0; -- chunks sent so far, likewise
