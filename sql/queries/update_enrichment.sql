-- NLP results for rows re-enriched by `reenrich`; only rows still without them.
UPDATE messages AS m
SET sentiment_label = u.sentiment_label,
    sentiment_score = u.sentiment_score,
    toxicity = u.toxicity,
    language = u.language,
    nlp = u.nlp,
    nlp_status = 'ok'
FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::real[], $5::real[], $6::text[], $7::jsonb[])
     AS u(message_id, sent_at, sentiment_label, sentiment_score, toxicity, language, nlp)
WHERE m.message_id = u.message_id AND m.sent_at = u.sent_at AND m.nlp_status <> 'ok'
