-- PLACEHOLDER of branch regen only: stands for the other engineers' migration of this number
-- so that 010/006_superseded has no gap. Delete this file when merging.
SELECT 1;
