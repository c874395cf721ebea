-- The next rows without NLP data after a (sent_at, message_id) cursor, oldest first, locked
-- for the caller's transaction. Rows another worker holds are skipped, so several workers
-- re-enrich side by side without doing a row twice. The predicate is the partial index's.
SELECT message_id, sent_at, text
  FROM messages
 WHERE nlp_status IN ('breaker_open', 'failed_after_retries', 'invalid_response')
   AND (sent_at, message_id) > ($1::timestamptz, $2::uuid)
 ORDER BY sent_at, message_id
 LIMIT $3
   FOR UPDATE SKIP LOCKED
