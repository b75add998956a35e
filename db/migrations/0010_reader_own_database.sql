-- liq_reader connects to this database because this migration grants it, not because every role
-- may: CONNECT (and TEMPORARY) are taken from PUBLIC here. Roles are cluster-wide, so the grant is
-- per database: each database migrated by this project grants it on itself, and no other.
-- The role running the migrations keeps its access explicitly (an owner or a superuser has it
-- anyway). Other databases on the server are beyond a migration's reach: see the README's
-- "remaining grants" for `postgres` and `template1`.
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO liq_reader', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), session_user);
END
$$;
