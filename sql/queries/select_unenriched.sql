-- Rows stored without NLP data, oldest first, after a (sent_at, message_id) cursor.
SELECT message_id, sent_at, text
FROM messages
WHERE nlp_status <> 'ok'
  AND (sent_at, message_id) > ($1::timestamptz, $2::uuid)
ORDER BY sent_at, message_id
LIMIT $3
