-- Messages, one partition per day of sent_at, plus a default partition for outliers
-- (clock-skewed bots, back-filled history). Partitions ahead of time are created by
-- `chat-analytics partitions` / the worker's partition maintainer.
CREATE TABLE IF NOT EXISTS messages (
    message_id       uuid        NOT NULL,
    bot_id           text        NOT NULL,
    conversation_id  text,
    user_id          text,
    text             text        NOT NULL,
    sent_at          timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    processed_at     timestamptz NOT NULL DEFAULT now(),
    sentiment_label  text,
    sentiment_score  real,
    toxicity         real,
    language         text,
    nlp              jsonb,
    nlp_status       text        NOT NULL,
    flagged          boolean     NOT NULL DEFAULT false,
    flagged_terms    text[]      NOT NULL DEFAULT '{}',
    metadata         jsonb,
    kafka_partition  int,
    kafka_offset     bigint,
    PRIMARY KEY (message_id, sent_at)
) PARTITION BY RANGE (sent_at);

CREATE TABLE IF NOT EXISTS messages_default PARTITION OF messages DEFAULT;

CREATE INDEX IF NOT EXISTS messages_bot_id_sent_at_idx ON messages (bot_id, sent_at);
