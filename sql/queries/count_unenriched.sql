-- Rows waiting for re-enrichment (the reenrich_backlog gauge), counted through the partial
-- index and capped so that a huge backlog costs a bounded scan.
SELECT count(*)
  FROM (SELECT 1
          FROM messages
         WHERE nlp_status IN ('breaker_open', 'failed_after_retries', 'invalid_response')
         LIMIT $1) AS waiting
