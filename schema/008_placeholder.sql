-- PLACEHOLDER of the replymode branch, not a real migration: this number belongs to another
-- branch of issue 15 (the migration numbers count without gaps, tools/embed_schema.sh).
-- Delete this file when merging: that branch's own file of this number takes its place.
SELECT 1;
