-- Up to $2 message keys stored before $1 (found through the BRIN index on stored_at),
-- deleted; repeated until none is left, so no statement holds many locks or runs long.
DELETE FROM message_keys
 WHERE ctid = ANY (ARRAY(SELECT ctid FROM message_keys WHERE stored_at < $1 LIMIT $2))
