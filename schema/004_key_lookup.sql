-- 004: a key is found by its first 8 hex characters (after "pk_"), so checking a key costs
-- one lookup and one hash, not one hash per stored key. The 8 characters are not secret:
-- 128 random bits of the key stay behind them. Keys made before this migration have no
-- lookup and are still checked the old way.
ALTER TABLE api_keys ADD COLUMN lookup TEXT;
CREATE INDEX api_keys_lookup ON api_keys(lookup);
