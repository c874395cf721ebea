-- Role chat_analyst: analysts read messages, the rollups and the views, and nothing else.
-- SELECT on the partitioned `messages` covers reading through it, not its partitions by
-- name; message_keys, schema_migrations and any later table stay out of reach. In this
-- database a query may run 30 s at most (one heavy ad-hoc query cannot starve the
-- writers) and every transaction is read-only.
--
-- `migrate` gives the role LOGIN and its password from `postgres.analyst_password` after
-- this file (the password is configuration, not schema). Creating the role needs
-- CREATEROLE; where the migrating user lacks it, a DBA creates chat_analyst beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_analyst') THEN
        -- Roles are shared by every database of the server: another database's migration
        -- may create it at the same moment.
        BEGIN
            CREATE ROLE chat_analyst NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- Per database, so migrations of two databases never update the same catalog row.
    EXECUTE format('ALTER ROLE chat_analyst IN DATABASE %I SET statement_timeout = %L',
                   current_database(), '30s');
    EXECUTE format('ALTER ROLE chat_analyst IN DATABASE %I SET default_transaction_read_only = on',
                   current_database());
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM chat_analyst;
GRANT USAGE ON SCHEMA public TO chat_analyst;
GRANT SELECT ON messages,
                messages_per_minute, messages_per_hour, messages_per_day, rollup_pending,
                flagged_terms_per_day, flagged_terms_pending,
                messages_hourly, messages_daily, flagged_terms_daily
   TO chat_analyst;
