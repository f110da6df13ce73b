-- What pgretention builds on, read from where it lives: pg_partman (schema, major version, calls
-- with the arguments its version knows), Citus (distributed tables, read from Citus's catalog),
-- and the versions of both for `pgretention version`.

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

-- Call a pg_partman function with named arguments, passing only those its version knows
-- (create_parent differs between 4.x and 5.x). Values are literals cast to the parameter type.
CREATE OR REPLACE FUNCTION pgretention._partman_call(p_func text, p_args jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_schema name := pgretention._partman_schema();
    v_proc record;
    v_parts text[] := '{}';
    v_key text;
    v_idx int;
    v_result text;
BEGIN
    IF v_schema IS NULL THEN
        RAISE EXCEPTION 'pg_partman is not installed in this database' USING ERRCODE = 'undefined_object';
    END IF;
    SELECT p.oid, p.proargnames, p.proargtypes INTO v_proc
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = v_schema AND p.proname = p_func
    ORDER BY p.pronargs DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pg_partman function %.% not found', v_schema, p_func USING ERRCODE = 'undefined_function';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(p_args) LOOP
        v_idx := array_position(v_proc.proargnames, v_key);
        CONTINUE WHEN v_idx IS NULL OR p_args ->> v_key IS NULL;
        v_parts := v_parts || format('%I := %L::%s', v_key,
                                     CASE WHEN jsonb_typeof(p_args -> v_key) = 'array'
                                          THEN ARRAY(SELECT jsonb_array_elements_text(p_args -> v_key))::text
                                          ELSE p_args ->> v_key END,
                                     format_type(v_proc.proargtypes[v_idx - 1], NULL));
    END LOOP;
    -- pg_partman runs with search_path = <its schema>, pg_temp, <ours>: a temporary view or domain
    -- of this session would be found before pg_catalog's, with the rights of pgretention's owner
    PERFORM pgretention._require_no_temp_objects(format('calling pg_partman %s', p_func));
    BEGIN
        EXECUTE format('SELECT %I.%I(%s)::text', v_schema, p_func, array_to_string(v_parts, ', ')) INTO v_result;
    EXCEPTION WHEN raise_exception THEN
        -- pg_partman re-raises every error as its own (SQLSTATE P0001), the original message first: a
        -- lock timeout gets its SQLSTATE back, so that a caller can tell "busy, retry" from an error
        -- (the server's messages in English, as the lc_messages of most servers)
        IF SQLERRM LIKE 'canceling statement due to lock timeout%' THEN
            RAISE EXCEPTION 'pg_partman %: %', p_func, split_part(SQLERRM, E'\n', 1)
                USING ERRCODE = 'lock_not_available';
        END IF;
        RAISE;
    END;
    -- partitions pg_partman created (as the installing role) belong to the table's owner
    IF p_args ? 'p_parent_table' AND to_regclass(p_args ->> 'p_parent_table') IS NOT NULL THEN
        PERFORM pgretention._give_tree_to_owner((p_args ->> 'p_parent_table')::regclass);
    END IF;
    -- pg_partman saves and restores search_path with a session-level set_config, which would leave
    -- this function's fixed search_path in the caller's session. Put the session default back, and
    -- keep the fixed one for the rest of this transaction's pgretention code.
    PERFORM set_config('search_path', (SELECT s.reset_val FROM pg_settings s WHERE s.name = 'search_path'), false);
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    RETURN v_result;
END
$$;

-- Remove pg_partman's configuration (and template tables) for the given parents; the tables stay.
CREATE OR REPLACE FUNCTION pgretention._forget_partman(p_parents text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_schema name := pgretention._partman_schema();
    v_template text;
BEGIN
    FOR v_template IN EXECUTE format('SELECT template_table FROM %I.part_config WHERE parent_table = ANY ($1)'
                                     ' AND template_table IS NOT NULL', v_schema) USING p_parents LOOP
        IF to_regclass(v_template) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %s', to_regclass(v_template));
        END IF;
    END LOOP;
    EXECUTE format('DELETE FROM %I.part_config WHERE parent_table = ANY ($1)', v_schema) USING p_parents;
END
$$;

-- Citus is installed in this database (pgretention then runs on the coordinator).
CREATE OR REPLACE FUNCTION pgretention._citus()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') $$;

-- A Citus table (distributed or reference): its rows live in shards on other nodes, so row
-- addresses (ctid, tableoid) mean nothing across the cluster and are never used on it.
CREATE OR REPLACE FUNCTION pgretention._is_distributed(p_rel regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v boolean;
BEGIN
    IF p_rel IS NULL OR to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)' INTO v USING p_rel;
    RETURN v;
END
$$;

-- The distribution column of a Citus distributed table (NULL for any other table).
CREATE OR REPLACE FUNCTION pgretention._distribution_column(p_rel regclass)
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v name;
BEGIN
    IF NOT pgretention._is_distributed(p_rel) THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT column_to_column_name(logicalrelid, partkey) FROM pg_catalog.pg_dist_partition'
            ' WHERE logicalrelid = $1 AND partkey IS NOT NULL' INTO v USING p_rel;
    RETURN v;
END
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
