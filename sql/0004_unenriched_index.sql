-- Rows stored without NLP data that are worth another try (the API was failing or the
-- breaker open, or the answer was outside the contract), in the order the worker's
-- re-enrichment takes them: oldest first. Partial, so it holds only those rows and costs
-- nothing for the rest; a row leaves it when its NLP data is filled in.
CREATE INDEX IF NOT EXISTS messages_unenriched_idx ON messages (sent_at, message_id)
 WHERE nlp_status IN ('breaker_open', 'failed_after_retries', 'invalid_response');
