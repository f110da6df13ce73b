-- Policy API of the partition engine: managed tables (classes: classes.sql, members: members.sql).
--
-- Layout (see docs/partition-engine.md): with a class column the table is LIST-partitioned by
-- that column, one partition per retention class (the default class is the DEFAULT partition),
-- and each class partition is RANGE-partitioned by time and premade by pg_partman. A class's
-- expired data is therefore whole leaf partitions of that class only: dropping them never touches
-- another class's rows. Without a class column the table is RANGE-partitioned directly (one class).

-- Shared by table_create, table_manage and adoption: validate everything, then register. The
-- caller must act for the table's owner and may name an archive schema only where it may create
-- tables (core/names.sql).
CREATE OR REPLACE FUNCTION pgretention._register_table(
    p_schema text, p_name text, p_time_column text, p_interval text, p_classes jsonb,
    p_class_column text, p_default_class text, p_premake int, p_time_zone text,
    p_min_drop_after text, p_max_drop_after text, p_on_expiry text, p_archive_schema text,
    p_null_time text)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table text := format('%I.%I', p_schema, p_name);
    v_rel regclass;
    v_type text;
    v_interval interval;
    v_min interval;
    v_max interval;
    v_id int;
    v_default text;
BEGIN
    v_rel := pgretention._user_table(p_schema || '.' || p_name);
    PERFORM pgretention._check_ident('time column', p_time_column);
    v_type := pgretention._column_type(v_rel, p_time_column, NULL, false);
    -- epoch seconds in an integer column: tables taken over by adopt (adopt/)
    IF v_type IN ('bigint', 'integer') AND EXISTS (SELECT FROM pgretention.adoption d WHERE d.table_schema = p_schema
           AND d.table_name = p_name AND d.state = 'validated' AND d.time_type = 'epoch') THEN
        v_type := 'epoch';
    END IF;
    v_type := CASE v_type
        WHEN 'timestamp with time zone' THEN 'timestamptz'
        WHEN 'timestamp without time zone' THEN 'timestamp'
        WHEN 'date' THEN 'date'
        WHEN 'epoch' THEN 'epoch'
        ELSE NULL END;
    IF v_type IS NULL THEN
        RAISE EXCEPTION 'column % of table % is not a time column (timestamptz, timestamp or date)',
            quote_ident(p_time_column), v_table USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF p_class_column IS NOT NULL THEN
        PERFORM pgretention._check_ident('class column', p_class_column);
        PERFORM pgretention._column_type(v_rel, p_class_column);
        IF p_class_column = p_time_column THEN
            RAISE EXCEPTION 'class column of table % cannot be its time column', v_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    v_interval := pgretention._parse_interval(format('partition interval of table %s', v_table), p_interval);
    IF v_interval < interval '1 hour' THEN
        RAISE EXCEPTION 'partition interval % of table % is shorter than 1 hour', p_interval, v_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_premake IS NULL OR p_premake < 1 OR p_premake > 1000 THEN
        RAISE EXCEPTION 'premake of table % must be between 1 and 1000', v_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_time_zone IS NULL OR NOT EXISTS (SELECT FROM pg_timezone_names WHERE name = p_time_zone) THEN
        RAISE EXCEPTION 'unknown time zone % for table %', coalesce(quote_literal(p_time_zone), 'NULL'), v_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_type IN ('timestamptz', 'epoch') AND p_time_zone <> 'UTC' THEN
        RAISE EXCEPTION 'time zone applies to timestamp and date columns only; % of % is %',
            quote_ident(p_time_column), v_table, v_type USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_min_drop_after IS NOT NULL THEN
        v_min := pgretention._parse_interval(format('minimum drop_after of table %s', v_table), p_min_drop_after);
    END IF;
    IF p_max_drop_after IS NOT NULL THEN
        v_max := pgretention._parse_interval(format('maximum drop_after of table %s', v_table), p_max_drop_after);
    END IF;
    IF v_min > v_max THEN
        RAISE EXCEPTION 'allowed drop_after window of table % is empty (% > %)', v_table, v_min, v_max
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_default := coalesce(p_default_class,
                          CASE WHEN jsonb_typeof(p_classes) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(p_classes)) = 1
                               THEN (SELECT k FROM jsonb_object_keys(p_classes) k) END);
    IF v_default IS NULL THEN
        RAISE EXCEPTION 'table % has several classes: name the default class', v_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pgretention._check_classes(v_table, p_classes, v_default, p_class_column IS NOT NULL, v_min, v_max);
    IF p_on_expiry NOT IN ('drop', 'archive') OR p_on_expiry IS NULL THEN
        RAISE EXCEPTION 'on_expiry of table % must be drop or archive, got %', v_table,
            coalesce(quote_literal(p_on_expiry), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (p_on_expiry = 'archive') <> (p_archive_schema IS NOT NULL) THEN
        RAISE EXCEPTION 'table %: an archive schema goes with on_expiry archive, and only with it', v_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_archive_schema IS NOT NULL THEN
        PERFORM pgretention._user_schema(p_archive_schema, 'archive schema');
    END IF;
    IF p_null_time NOT IN ('keep', 'purge') OR p_null_time IS NULL THEN
        RAISE EXCEPTION 'null_time of table % must be keep or purge', v_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgretention.managed_table (table_schema, table_name, relid, time_column, time_type, time_zone,
        partition_interval, premake, class_column, default_class, min_drop_after, max_drop_after,
        on_expiry, archive_schema, null_time_action)
    VALUES (p_schema, p_name, v_rel, p_time_column, v_type, p_time_zone, v_interval, p_premake, p_class_column,
        v_default, v_min, v_max, p_on_expiry, p_archive_schema, p_null_time)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Create a new managed table from a column list. The caller needs CREATE on the schema (which must
-- not be a reserved one, core/names.sql); the new table is owned by the caller's login
-- (session_user), like a table it created itself, and its name is lower case. The partitions
-- pgretention creates under it are owned by the role that installed pgretention, as before.

CREATE OR REPLACE FUNCTION pgretention.table_create(
    p_table text,
    p_columns text,
    p_time_column text,
    p_interval text,
    p_classes jsonb,
    p_class_column text DEFAULT NULL,
    p_default_class text DEFAULT NULL,
    p_premake int DEFAULT 4,
    p_time_zone text DEFAULT 'UTC',
    p_start timestamptz DEFAULT NULL,
    p_min_drop_after text DEFAULT NULL,
    p_max_drop_after text DEFAULT NULL,
    p_on_expiry text DEFAULT 'drop',
    p_archive_schema text DEFAULT NULL,
    p_null_time text DEFAULT 'keep',
    p_layout text DEFAULT NULL,
    p_distribute_by text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_cols text := pgretention._column_defs(p_columns);
    v_qual text := format('%I.%I', v_name.schema_name, v_name.table_name);
    v_layout text;
    v_id int;
BEGIN
    -- the layout: 'class' (LIST by class, then RANGE by time) unless asked otherwise or distributed
    v_layout := CASE WHEN p_class_column IS NULL THEN 'class'
                     ELSE coalesce(p_layout, CASE WHEN p_distribute_by IS NOT NULL THEN 'time' ELSE 'class' END) END;
    IF p_layout IS NOT NULL AND p_layout NOT IN ('class', 'time') THEN
        RAISE EXCEPTION 'layout of table % must be class or time, got %', v_qual, quote_literal(p_layout)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_distribute_by IS NOT NULL THEN
        PERFORM pgretention._check_ident('distribution column', p_distribute_by);
        IF NOT pgretention._citus() THEN
            RAISE EXCEPTION 'table % cannot be distributed by %: the citus extension is not installed in this database',
                v_qual, quote_ident(p_distribute_by) USING ERRCODE = 'feature_not_supported';
        END IF;
        IF v_layout = 'class' AND p_class_column IS NOT NULL THEN
            RAISE EXCEPTION 'table % cannot have the class layout on Citus: it needs two levels of partitioning'
                ' (LIST by class, RANGE by time), which Citus refuses; use p_layout => ''time''', v_qual
                USING ERRCODE = 'feature_not_supported';
        END IF;
    END IF;
    PERFORM pgretention._user_schema(v_name.schema_name);
    IF v_name.table_name <> lower(v_name.table_name) THEN
        RAISE EXCEPTION 'invalid table name %: new tables get lower-case names (pgretention does not fold case;'
            ' SQL without quotes would not find %)', quote_literal(v_qual), v_qual USING ERRCODE = 'invalid_name';
    END IF;
    IF to_regclass(format('%I.%I', v_name.schema_name, v_name.table_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'table %.% already exists: use table_manage for an existing partitioned table',
            v_name.schema_name, v_name.table_name USING ERRCODE = 'duplicate_table';
    END IF;
    BEGIN
        IF p_class_column IS NOT NULL AND v_layout = 'class' THEN
            EXECUTE format('CREATE TABLE %I.%I (%s) PARTITION BY LIST (%I)', v_name.schema_name, v_name.table_name,
                           v_cols, pgretention._check_ident('class column', p_class_column));
        ELSE
            EXECUTE format('CREATE TABLE %I.%I (%s) PARTITION BY RANGE (%I)', v_name.schema_name, v_name.table_name,
                           v_cols, pgretention._check_ident('time column', p_time_column));
        END IF;
    EXCEPTION WHEN undefined_column THEN
        RAISE EXCEPTION 'column % does not exist in table %.%',
            quote_ident(coalesce(p_class_column, p_time_column)), v_name.schema_name, v_name.table_name
            USING ERRCODE = 'undefined_column';
    END;
    IF session_user <> current_user THEN
        EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', v_name.schema_name, v_name.table_name, session_user);
    END IF;
    v_id := pgretention._register_table(v_name.schema_name, v_name.table_name, p_time_column, p_interval,
        p_classes, p_class_column, p_default_class, p_premake, p_time_zone, p_min_drop_after, p_max_drop_after,
        p_on_expiry, p_archive_schema, p_null_time);
    UPDATE pgretention.managed_table SET layout = v_layout WHERE id = v_id;
    IF p_distribute_by IS NOT NULL THEN
        PERFORM pgretention._column_type(v_qual::regclass, p_distribute_by);
        -- before any partition exists: the partitions pg_partman makes are distributed with it
        EXECUTE 'SELECT create_distributed_table($1, $2)' USING v_qual, p_distribute_by::text;
    END IF;
    PERFORM pgretention._setup_classes(v_id, p_classes, coalesce(p_start, now()));
    PERFORM pgretention._audit('table.create', v_qual,
        jsonb_build_object('classes', p_classes, 'interval', p_interval, 'class_column', p_class_column,
                           'layout', v_layout, 'distribute_by', p_distribute_by));
    RETURN v_id;
END
$$;

-- Take an existing table that is already RANGE-partitioned on its time column under management
-- (one class). Plain tables are converted by adopt; tables partitioned otherwise are refused.
CREATE OR REPLACE FUNCTION pgretention.table_manage(
    p_table text,
    p_time_column text,
    p_interval text,
    p_classes jsonb,
    p_premake int DEFAULT 4,
    p_time_zone text DEFAULT 'UTC',
    p_start timestamptz DEFAULT NULL,
    p_on_expiry text DEFAULT 'drop',
    p_archive_schema text DEFAULT NULL,
    p_null_time text DEFAULT 'keep')
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_rel regclass := pgretention._user_table(p_table);
    v_key text;
    v_id int;
    v_pm_parent text;
BEGIN
    IF EXISTS (SELECT FROM pgretention.managed_table m WHERE m.table_schema = v_name.schema_name
               AND m.table_name = v_name.table_name) THEN
        RAISE EXCEPTION 'table %.% is already managed by pgretention', v_name.schema_name, v_name.table_name
            USING ERRCODE = 'duplicate_object';
    END IF;
    SELECT pg_get_partkeydef(v_rel) INTO v_key;
    IF v_key IS NULL THEN
        RAISE EXCEPTION 'table %.% is not partitioned: use adopt to convert a plain table online',
            v_name.schema_name, v_name.table_name USING ERRCODE = 'wrong_object_type';
    END IF;
    IF v_key <> format('RANGE (%s)', quote_ident(p_time_column)) THEN
        RAISE EXCEPTION 'table %.% is partitioned by % , not by RANGE on % : table_manage supports tables partitioned by range on the time column',
            v_name.schema_name, v_name.table_name, v_key, quote_ident(coalesce(p_time_column, ''))
            USING ERRCODE = 'feature_not_supported';
    END IF;
    v_id := pgretention._register_table(v_name.schema_name, v_name.table_name, p_time_column, p_interval,
        p_classes, NULL, NULL, p_premake, p_time_zone, NULL, NULL, p_on_expiry, p_archive_schema, p_null_time);
    v_pm_parent := format('%s.%s', v_name.schema_name, v_name.table_name);
    EXECUTE format('SELECT count(*) FROM %I.part_config WHERE parent_table = $1', pgretention._partman_schema())
        INTO v_key USING v_pm_parent;
    IF v_key::int > 0 THEN
        -- Already a pg_partman partition set: keep its configuration, take over retention.
        INSERT INTO pgretention.retention_class (table_id, class_name, anonymise_after, drop_after, parent_schema, parent_name)
        SELECT v_id, key, (value ->> 'anonymise_after')::interval, (value ->> 'drop_after')::interval,
               v_name.schema_name, v_name.table_name
        FROM jsonb_each(p_classes);
        EXECUTE format('UPDATE %I.part_config SET retention = NULL WHERE parent_table = $1', pgretention._partman_schema())
            USING v_pm_parent;
    ELSE
        PERFORM pgretention._setup_classes(v_id, p_classes, coalesce(p_start, now()));
    END IF;
    PERFORM pgretention._audit('table.manage', v_pm_parent, jsonb_build_object('classes', p_classes, 'interval', p_interval));
    RETURN v_id;
END
$$;

-- Stop managing a table; its data and partitions stay, pg_partman's configuration for it goes.
-- A table that no longer exists under its name (dropped, renamed), or in a schema pgretention may not
-- act on (taken in by an earlier release), can be released by any admin.
CREATE OR REPLACE FUNCTION pgretention.table_release(p_table text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
BEGIN
    IF to_regclass(format('%I.%I', t.table_schema, t.table_name)) IS NOT NULL
       AND pgretention._reserved_schema(t.table_schema) IS NULL THEN
        PERFORM pgretention._user_table(t.table_schema || '.' || t.table_name);
    END IF;
    PERFORM pgretention._forget_partman(ARRAY(SELECT format('%s.%s', parent_schema, parent_name)
                                              FROM pgretention.retention_class WHERE table_id = t.id));
    DELETE FROM pgretention.managed_table WHERE id = t.id;
    PERFORM pgretention._audit('table.release', format('%I.%I', t.table_schema, t.table_name), '{}');
END
$$;
