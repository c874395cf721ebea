-- One row per message_id stored: what makes a message_id unique across `messages`.
--
-- The primary key of `messages` is (message_id, sent_at), because a unique key of a
-- partitioned table must hold its partition key. That alone lets one message_id be
-- stored twice with two sent_at values: a client retrying a post without sent_at (the
-- default is the time received, different for each copy), or re-posting it with another.
-- The worker claims the key here in the same statement that inserts the row, and inserts
-- only rows whose key was new: the first stored copy wins, a later one is a duplicate
-- (same content) or a conflict (other content: counted and logged, not stored).
--
-- Keys live as long as the raw rows' retention (`partitions.retention_days`, counted from
-- stored_at): the partition maintainer deletes older ones, found through the BRIN index
-- (rows arrive in stored_at order, so a few pages summarise a day).
CREATE TABLE IF NOT EXISTS message_keys (
    message_id   uuid        PRIMARY KEY,
    -- Where the row lives: (message_id, sent_at) in messages.
    sent_at      timestamptz NOT NULL,
    -- First 16 bytes of the SHA-256 of the content as posted (ChatMessage::content_digest);
    -- NULL for rows stored before this table existed.
    content_hash bytea,
    stored_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS message_keys_stored_at_idx ON message_keys USING brin (stored_at);

-- Rows stored before this migration keep their first copy as the key.
INSERT INTO message_keys (message_id, sent_at, stored_at)
SELECT DISTINCT ON (message_id) message_id, sent_at, processed_at
  FROM messages
 ORDER BY message_id, processed_at, sent_at
ON CONFLICT (message_id) DO NOTHING;
