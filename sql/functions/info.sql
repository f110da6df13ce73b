-- Where pg_partman lives and which major version it is (4.x and 5.x differ in create_parent).
CREATE OR REPLACE FUNCTION pgretention._partman_schema()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_partman'
$$;

CREATE OR REPLACE FUNCTION pgretention._partman_major()
RETURNS int
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT split_part(e.extversion, '.', 1)::int FROM pg_extension e WHERE e.extname = 'pg_partman'
$$;

-- Versions of everything pgretention depends on, for `pgretention version` and the test header.
CREATE OR REPLACE FUNCTION pgretention.version_info()
RETURNS TABLE (component text, version text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'catalog', (SELECT v.version_num FROM pgretention.alembic_version v LIMIT 1)
    UNION ALL SELECT 'server', current_setting('server_version')
    UNION ALL SELECT e.extname, e.extversion FROM pg_extension e
              WHERE e.extname IN ('pg_partman', 'pgcrypto', 'pg_cron')
$$;
