-- One batch of processed messages as parallel arrays: a single round trip whatever the
-- batch size. ON CONFLICT DO NOTHING makes re-delivery and dead-letter replay
-- idempotent; RETURNING tells which rows were new.
INSERT INTO messages (
    message_id, bot_id, conversation_id, user_id, text, sent_at, received_at, processed_at,
    sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
    flagged, flagged_terms, metadata, kafka_partition, kafka_offset)
SELECT m.message_id, m.bot_id, m.conversation_id, m.user_id, m.text, m.sent_at, m.received_at,
       clock_timestamp(), m.sentiment_label, m.sentiment_score, m.toxicity, m.language, m.nlp,
       m.nlp_status, m.flagged, ARRAY(SELECT jsonb_array_elements_text(m.flagged_terms)),
       m.metadata, m.kafka_partition, m.kafka_offset
FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::timestamptz[], $8::text[], $9::real[], $10::real[], $11::text[], $12::jsonb[],
            $13::text[], $14::bool[], $15::jsonb[], $16::jsonb[], $17::int4[], $18::int8[])
     AS m(message_id, bot_id, conversation_id, user_id, text, sent_at, received_at,
          sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
          flagged, flagged_terms, metadata, kafka_partition, kafka_offset)
ON CONFLICT DO NOTHING
RETURNING message_id
