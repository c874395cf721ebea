-- Seed data for the analysts' queries (docs/ANALYTICS.md) and the Grafana analytics
-- dashboard: about 60,000 messages of 12 bots over the last 10 UTC days, in daily
-- partitions, with their rollups. Run as the owner of a migrated database (`migrate`).
--
-- The rollups are folded from the raw rows with the same aggregate the migration uses for
-- rows stored before the rollups existed (sql/0005_rollups.sql); that they equal what
-- the worker maintains is proven by tests/rollups.rs.

-- A daily partition for each seeded day the maintainer has not created yet.
DO $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 10,
                                      (now() AT TIME ZONE 'UTC')::date, interval '1 day')::date
    LOOP
        IF to_regclass(format('messages_p%s', to_char(day, 'YYYYMMDD'))) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
                format('messages_p%s', to_char(day, 'YYYYMMDD')),
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
        END IF;
    END LOOP;
END
$$;

INSERT INTO messages (message_id, bot_id, conversation_id, user_id, text, sent_at, received_at,
                      sentiment_label, sentiment_score, toxicity, language, nlp, nlp_status,
                      flagged, flagged_terms)
SELECT gen_random_uuid(),
       'bot-' || lpad((i % 12)::text, 2, '0'),
       'conv-' || (i % 12) || '-' || (i % 97),
       'user-' || (i % 503),
       (ARRAY['my order has not arrived yet', 'thank you so much, great help',
              'this is a scam and you are an idiot', 'where can I reset my password',
              'the refund still has not come through', 'hallo, wie kann ich bezahlen',
              'bonjour, je voudrais annuler ma commande', 'great service, love it',
              'what the heck is going on with my account', 'can I talk to a human please'])[1 + i % 10],
       sent,
       sent + interval '40 milliseconds',
       CASE WHEN analysed THEN label END,
       CASE WHEN analysed THEN score END,
       CASE WHEN analysed THEN tox END,
       CASE WHEN analysed THEN (ARRAY['en', 'en', 'en', 'de', 'fr', 'es', 'und'])[1 + i % 7] END,
       CASE WHEN analysed THEN jsonb_build_object('keywords', jsonb_build_array('order')) END,
       CASE WHEN analysed THEN 'ok' ELSE (ARRAY['breaker_open', 'failed_after_retries'])[1 + i % 2] END,
       i % 10 IN (2, 8),
       CASE i % 10 WHEN 2 THEN ARRAY['scam', 'idiot'] WHEN 8 THEN ARRAY['heck'] ELSE '{}' END
  FROM generate_series(1, 60000) AS i,
       LATERAL (SELECT date_trunc('day', now(), 'UTC') - interval '9 days'
                       + (i::float8 / 60000) * (now() - (date_trunc('day', now(), 'UTC') - interval '9 days'))
                       AS sent,
                       i % 11 <> 0 AS analysed,
                       (ARRAY['positive', 'neutral', 'negative'])[1 + (i * 7) % 3] AS label,
                       (((i * 37) % 200) - 100) / 100.0 AS score,
                       ((i * 53) % 100) / 100.0 AS tox) AS g;

INSERT INTO message_keys (message_id, sent_at, stored_at)
SELECT message_id, sent_at, received_at FROM messages
ON CONFLICT (message_id) DO NOTHING;

INSERT INTO rollup_pending
SELECT date_trunc('minute', sent_at, 'UTC'), bot_id,
       count(*), count(sentiment_label), count(sentiment_score),
       coalesce(sum(sentiment_score::float8::numeric), 0),
       count(*) FILTER (WHERE sentiment_label = 'negative'),
       count(*) FILTER (WHERE sentiment_label = 'neutral'),
       count(*) FILTER (WHERE sentiment_label = 'positive'),
       count(toxicity), coalesce(sum(toxicity::float8::numeric), 0), max(toxicity),
       count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE nlp_status <> 'ok')
  FROM messages
 GROUP BY 1, 2;

INSERT INTO flagged_terms_pending
SELECT (m.sent_at AT TIME ZONE 'UTC')::date, m.bot_id, t.term, count(*)
  FROM messages m
 CROSS JOIN LATERAL (SELECT DISTINCT unnest(m.flagged_terms)) AS t(term)
 WHERE m.flagged
 GROUP BY 1, 2, 3;

ANALYZE messages, message_keys, rollup_pending, flagged_terms_pending, messages_per_minute,
        messages_per_hour, messages_per_day, flagged_terms_per_day;
