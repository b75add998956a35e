-- The app's read-only role. Roles are cluster-wide, so several databases on one server share it;
-- its password (LIQ_READER_PASSWORD) is set by the migration runner, never written here.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'liq_reader') THEN
        CREATE ROLE liq_reader LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database's migration created it at the same moment
END
$$;
GRANT USAGE ON SCHEMA public TO liq_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO liq_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO liq_reader;
