-- Policy API of the partition engine: managed tables, retention classes and class members.
--
-- Layout (see docs/partition-engine.md): with a class column the table is LIST-partitioned by
-- that column, one partition per retention class (the default class is the DEFAULT partition),
-- and each class partition is RANGE-partitioned by time and premade by pg_partman. A class's
-- expired data is therefore whole leaf partitions of that class only: dropping them never touches
-- another class's rows. Without a class column the table is RANGE-partitioned directly (one class).

-- Validate the classes document: {"name": {"drop_after": "13 months", "anonymise_after": "3 months",
-- "members": ["NL", "DE"]}, ...}. Returns nothing; raises on the first problem.
CREATE OR REPLACE FUNCTION pgretention._check_classes(
    p_table text, p_classes jsonb, p_default_class text, p_has_class_column boolean,
    p_min interval, p_max interval)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text;
    v_def jsonb;
    v_drop interval;
    v_anon interval;
    v_key text;
    v_seen text[] := '{}';
    v_member text;
BEGIN
    IF p_classes IS NULL OR jsonb_typeof(p_classes) <> 'object' OR p_classes = '{}'::jsonb THEN
        RAISE EXCEPTION 'classes for table % must be a JSON object of class name -> {"drop_after": ...}', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT p_classes ? p_default_class THEN
        RAISE EXCEPTION 'default class % of table % is not among its classes', quote_literal(p_default_class), p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT p_has_class_column AND (SELECT count(*) FROM jsonb_object_keys(p_classes)) > 1 THEN
        RAISE EXCEPTION 'table % has no class column: it can have one retention class only', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_name, v_def IN SELECT key, value FROM jsonb_each(p_classes) LOOP
        PERFORM pgretention._check_class_name(v_name);
        IF jsonb_typeof(v_def) <> 'object' THEN
            RAISE EXCEPTION 'class % of table %: expected an object with drop_after', v_name, p_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR v_key IN SELECT jsonb_object_keys(v_def) LOOP
            IF v_key NOT IN ('drop_after', 'anonymise_after', 'members') THEN
                RAISE EXCEPTION 'class % of table %: unknown key %', v_name, p_table, quote_literal(v_key)
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        v_drop := pgretention._parse_interval(format('drop_after of class %s', v_name), v_def ->> 'drop_after');
        IF v_def ? 'anonymise_after' AND v_def ->> 'anonymise_after' IS NOT NULL THEN
            v_anon := pgretention._parse_interval(format('anonymise_after of class %s', v_name),
                                                  v_def ->> 'anonymise_after');
            IF v_anon >= v_drop THEN
                RAISE EXCEPTION 'class % of table %: drop_after (%) must be longer than anonymise_after (%)',
                    v_name, p_table, v_drop, v_anon USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
        IF p_min IS NOT NULL AND v_drop < p_min OR p_max IS NOT NULL AND v_drop > p_max THEN
            RAISE EXCEPTION 'class % of table %: drop_after % is outside the allowed window % to %',
                v_name, p_table, v_drop, coalesce(p_min::text, '-'), coalesce(p_max::text, '-')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_def ? 'members' THEN
            IF NOT p_has_class_column THEN
                RAISE EXCEPTION 'class % of table %: members need a class column', v_name, p_table
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF jsonb_typeof(v_def -> 'members') <> 'array' THEN
                RAISE EXCEPTION 'class % of table %: members must be an array of values', v_name, p_table
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            FOR v_member IN SELECT jsonb_array_elements_text(v_def -> 'members') LOOP
                IF v_member IS NULL OR v_member = '' THEN
                    RAISE EXCEPTION 'class % of table %: empty member value', v_name, p_table
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF v_member = ANY (v_seen) THEN
                    RAISE EXCEPTION 'member % of table % is listed in two classes', quote_literal(v_member), p_table
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                v_seen := v_seen || v_member;
            END LOOP;
        END IF;
    END LOOP;
END
$$;

-- Create a class's partition (LIST value or DEFAULT under the table; or the table itself without a
-- class column) and hand it to pg_partman for time partitions and premaking.
CREATE OR REPLACE FUNCTION pgretention._create_class_partition(
    p_table_id int, p_class text, p_members text[], p_start timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_start text;
BEGIN
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    SELECT * INTO c FROM pgretention.retention_class WHERE table_id = p_table_id AND class_name = p_class;
    IF t.class_column IS NOT NULL AND t.layout = 'class' THEN
        IF p_class = t.default_class THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT PARTITION BY RANGE (%I)',
                           c.parent_schema, c.parent_name, t.table_schema, t.table_name, t.time_column);
        ELSE
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES IN (%s) PARTITION BY RANGE (%I)',
                           c.parent_schema, c.parent_name, t.table_schema, t.table_name,
                           (SELECT string_agg(format('%L', m), ', ') FROM unnest(p_members) m), t.time_column);
        END IF;
    END IF;
    v_start := CASE t.time_type
        WHEN 'timestamptz' THEN to_char(p_start, 'YYYY-MM-DD HH24:MI:SS')
        ELSE to_char(p_start AT TIME ZONE t.time_zone, 'YYYY-MM-DD HH24:MI:SS') END;
    PERFORM pgretention._partman_call('create_parent', jsonb_build_object(
        'p_parent_table', format('%s.%s', c.parent_schema, c.parent_name),
        'p_control', t.time_column,
        'p_type', CASE WHEN pgretention._partman_major() >= 5 THEN 'range' ELSE 'native' END,
        'p_interval', t.partition_interval::text,
        'p_premake', t.premake,
        'p_start_partition', v_start,
        'p_jobmon', false,
        'p_control_not_null', false,
        'p_default_table', true,
        'p_epoch', CASE WHEN t.time_type = 'epoch' THEN 'seconds' END));
    -- pgretention owns retention: pg_partman never drops anything of ours.
    EXECUTE format('UPDATE %I.part_config SET retention = NULL, infinite_time_partitions = true'
                   ' WHERE parent_table = $1', pgretention._partman_schema())
        USING format('%s.%s', c.parent_schema, c.parent_name);
END
$$;

-- Shared by create_table and manage_table: validate everything, then register.
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
    v_rel := to_regclass(v_table);
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'table % does not exist', v_table USING ERRCODE = 'undefined_table';
    END IF;
    PERFORM pgretention._check_ident('time column', p_time_column);
    SELECT format_type(a.atttypid, NULL) INTO v_type FROM pg_attribute a
    WHERE a.attrelid = v_rel AND a.attname = p_time_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column % does not exist in table %', quote_ident(p_time_column), v_table
            USING ERRCODE = 'undefined_column';
    END IF;
    -- epoch seconds in an integer column: tables taken over by adopt (sql/functions/adopt.sql)
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
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = p_class_column
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in table %', quote_ident(p_class_column), v_table
                USING ERRCODE = 'undefined_column';
        END IF;
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
        PERFORM pgretention._check_ident('archive schema', p_archive_schema);
        IF to_regnamespace(quote_ident(p_archive_schema)) IS NULL THEN
            RAISE EXCEPTION 'archive schema % does not exist', quote_ident(p_archive_schema)
                USING ERRCODE = 'invalid_schema_name';
        END IF;
    END IF;
    IF p_null_time NOT IN ('keep', 'purge') OR p_null_time IS NULL THEN
        RAISE EXCEPTION 'null_time of table % must be keep or purge', v_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgretention.managed_table (table_schema, table_name, time_column, time_type, time_zone,
        partition_interval, premake, class_column, default_class, min_drop_after, max_drop_after,
        on_expiry, archive_schema, null_time_action)
    VALUES (p_schema, p_name, p_time_column, v_type, p_time_zone, v_interval, p_premake, p_class_column,
        v_default, v_min, v_max, p_on_expiry, p_archive_schema, p_null_time)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Create a new managed table from a column list.
DROP FUNCTION IF EXISTS pgretention.create_table(text, text, text, text, jsonb, text, text, int, text, timestamptz,
                                                 text, text, text, text, text);
CREATE OR REPLACE FUNCTION pgretention.create_table(
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
    IF to_regnamespace(quote_ident(v_name.schema_name)) IS NULL THEN
        RAISE EXCEPTION 'schema % does not exist', quote_ident(v_name.schema_name) USING ERRCODE = 'invalid_schema_name';
    END IF;
    IF to_regclass(format('%I.%I', v_name.schema_name, v_name.table_name)) IS NOT NULL THEN
        RAISE EXCEPTION 'table %.% already exists: use manage_table for an existing partitioned table',
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
    v_id := pgretention._register_table(v_name.schema_name, v_name.table_name, p_time_column, p_interval,
        p_classes, p_class_column, p_default_class, p_premake, p_time_zone, p_min_drop_after, p_max_drop_after,
        p_on_expiry, p_archive_schema, p_null_time);
    UPDATE pgretention.managed_table SET layout = v_layout WHERE id = v_id;
    IF p_distribute_by IS NOT NULL THEN
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = v_qual::regclass AND a.attname = p_distribute_by
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in table %', quote_ident(p_distribute_by), v_qual
                USING ERRCODE = 'undefined_column';
        END IF;
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
CREATE OR REPLACE FUNCTION pgretention.manage_table(
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
    v_rel regclass := to_regclass(format('%I.%I', v_name.schema_name, v_name.table_name));
    v_key text;
    v_id int;
    v_pm_parent text;
BEGIN
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', v_name.schema_name, v_name.table_name USING ERRCODE = 'undefined_table';
    END IF;
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
        RAISE EXCEPTION 'table %.% is partitioned by % , not by RANGE on % : manage_table supports tables partitioned by range on the time column',
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

CREATE OR REPLACE FUNCTION pgretention._setup_classes(p_table_id int, p_classes jsonb, p_start timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table;
    v_name text;
    v_def jsonb;
    v_members text[];
BEGIN
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    FOR v_name, v_def IN SELECT key, value FROM jsonb_each(p_classes) ORDER BY key LOOP
        INSERT INTO pgretention.retention_class (table_id, class_name, anonymise_after, drop_after, parent_schema, parent_name)
        VALUES (p_table_id, v_name, (v_def ->> 'anonymise_after')::interval, (v_def ->> 'drop_after')::interval,
                t.table_schema,
                CASE WHEN t.class_column IS NULL OR t.layout = 'time' THEN t.table_name
                     ELSE pgretention._class_relname(t.table_name, v_name) END);
        v_members := ARRAY(SELECT jsonb_array_elements_text(coalesce(v_def -> 'members', '[]')));
        INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
        SELECT p_table_id, m, v_name, v_name FROM unnest(v_members) m;
        IF t.class_column IS NULL OR v_name = t.default_class
           OR cardinality(v_members) > 0 AND t.layout = 'class' THEN
            PERFORM pgretention._create_class_partition(p_table_id, v_name, v_members, p_start);
        END IF;
    END LOOP;
END
$$;

-- Add a retention class to a managed table (with its first members, if any).
CREATE OR REPLACE FUNCTION pgretention.add_class(
    p_table text, p_class text, p_drop_after text, p_anonymise_after text DEFAULT NULL,
    p_members text[] DEFAULT NULL, p_now timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
    v_def jsonb;
    v_member text;
BEGIN
    PERFORM pgretention._check_class_name(p_class);
    IF t.class_column IS NULL THEN
        RAISE EXCEPTION 'table %.% has no class column: it can have one retention class only', t.table_schema, t.table_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT FROM pgretention.retention_class WHERE table_id = t.id AND class_name = p_class) THEN
        RAISE EXCEPTION 'class % already exists for table %.%', p_class, t.table_schema, t.table_name
            USING ERRCODE = 'duplicate_object';
    END IF;
    v_def := jsonb_build_object('drop_after', p_drop_after);
    IF p_anonymise_after IS NOT NULL THEN
        v_def := v_def || jsonb_build_object('anonymise_after', p_anonymise_after);
    END IF;
    PERFORM pgretention._check_classes(format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object(p_class, v_def), p_class, true, t.min_drop_after, t.max_drop_after);
    INSERT INTO pgretention.retention_class (table_id, class_name, anonymise_after, drop_after, parent_schema, parent_name)
    VALUES (t.id, p_class, p_anonymise_after::interval, p_drop_after::interval, t.table_schema,
            CASE WHEN t.layout = 'time' THEN t.table_name ELSE pgretention._class_relname(t.table_name, p_class) END);
    PERFORM pgretention._audit('class.add', format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', p_class, 'drop_after', p_drop_after, 'anonymise_after', p_anonymise_after));
    FOREACH v_member IN ARRAY coalesce(p_members, '{}') LOOP
        PERFORM pgretention.assign_member(p_table, v_member, p_class, p_now);
    END LOOP;
END
$$;

-- Change a class's periods. Shortening takes effect at the next run.
CREATE OR REPLACE FUNCTION pgretention.set_class(
    p_table text, p_class text, p_drop_after text, p_anonymise_after text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
    c pgretention.retention_class;
    v_def jsonb;
BEGIN
    SELECT * INTO c FROM pgretention.retention_class WHERE table_id = t.id AND class_name = p_class FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'class % does not exist for table %.%', quote_literal(p_class), t.table_schema, t.table_name
            USING ERRCODE = 'undefined_object';
    END IF;
    v_def := jsonb_build_object('drop_after', p_drop_after);
    IF p_anonymise_after IS NOT NULL THEN
        v_def := v_def || jsonb_build_object('anonymise_after', p_anonymise_after);
    END IF;
    PERFORM pgretention._check_classes(format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object(p_class, v_def), p_class, t.class_column IS NOT NULL, t.min_drop_after, t.max_drop_after);
    UPDATE pgretention.retention_class
    SET drop_after = p_drop_after::interval, anonymise_after = p_anonymise_after::interval
    WHERE table_id = t.id AND class_name = p_class;
    PERFORM pgretention._audit('class.change', format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', p_class, 'old', jsonb_build_object('drop_after', c.drop_after, 'anonymise_after', c.anonymise_after),
                           'new', v_def));
END
$$;

-- Assign a class-column value (tenant, region, ...) to a class.
--  * A value with no rows stored yet is routed to the class's partition at once: the LIST bounds
--    change in one transaction with bounded lock waits (see _reroute for its cost).
--  * A value that already has rows keeps them where they are; they follow the new class's period
--    from the next run on (rows past a shorter period are deleted in bounded batches; rows kept
--    longer are moved into the old class's default partition before its time partition is dropped).
CREATE OR REPLACE FUNCTION pgretention.assign_member(
    p_table text, p_value text, p_class text, p_now timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
    c pgretention.retention_class;
    m pgretention.class_member;
    v_from text;
    v_from_rel text;
    v_has_rows boolean;
    v_result text;
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
BEGIN
    IF t.class_column IS NULL THEN
        RAISE EXCEPTION 'table % has no class column', v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_value IS NULL OR p_value = '' THEN
        RAISE EXCEPTION 'member value for table % must not be empty', v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO c FROM pgretention.retention_class WHERE table_id = t.id AND class_name = p_class;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'class % does not exist for table %', quote_literal(p_class), v_qual USING ERRCODE = 'undefined_object';
    END IF;
    IF t.min_drop_after IS NOT NULL AND c.drop_after < t.min_drop_after
       OR t.max_drop_after IS NOT NULL AND c.drop_after > t.max_drop_after THEN
        RAISE EXCEPTION 'class % (drop_after %) is outside the window % to % allowed for members of table %',
            p_class, c.drop_after, t.min_drop_after, t.max_drop_after, v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        EXECUTE format('SELECT %L::%s', p_value, (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                       WHERE a.attrelid = v_qual::regclass AND a.attname = t.class_column));
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'member value % does not fit class column % of table %', quote_literal(p_value),
            quote_ident(t.class_column), v_qual USING ERRCODE = 'invalid_text_representation';
    END;
    SELECT * INTO m FROM pgretention.class_member WHERE table_id = t.id AND value = p_value FOR UPDATE;
    v_from := coalesce(m.routed_class, t.default_class);
    IF m.class_name = p_class THEN
        RETURN 'unchanged';
    END IF;
    IF t.layout = 'time' THEN
        -- shared partitions: the value's rows follow the new class at once; partitions already
        -- purged for that class are looked at again
        INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
        VALUES (t.id, p_value, p_class, p_class)
        ON CONFLICT (table_id, value) DO UPDATE SET class_name = excluded.class_name,
            routed_class = excluded.routed_class, since = now();
        UPDATE pgretention.class_purge SET done = false WHERE table_id = t.id AND class_name = p_class;
        v_result := 'assigned to class ' || p_class;
    ELSIF v_from = p_class THEN  -- back to where its rows are
        UPDATE pgretention.class_member SET class_name = p_class, since = now() WHERE table_id = t.id AND value = p_value;
        v_result := 'reassigned';
    ELSE
        SELECT format('%I.%I', parent_schema, parent_name) INTO v_from_rel FROM pgretention.retention_class
        WHERE table_id = t.id AND class_name = v_from;
        EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I = %L)', v_from_rel, t.class_column, p_value) INTO v_has_rows;
        IF v_has_rows THEN
            INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
            VALUES (t.id, p_value, p_class, v_from)
            ON CONFLICT (table_id, value) DO UPDATE SET class_name = excluded.class_name, since = now();
            v_result := 'reassigned; stored rows stay in partition of class ' || v_from;
        ELSE
            INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
            VALUES (t.id, p_value, p_class, p_class)
            ON CONFLICT (table_id, value) DO UPDATE SET class_name = excluded.class_name,
                routed_class = excluded.routed_class, since = now();
            PERFORM pgretention._reroute(t.id, ARRAY[v_from, p_class], coalesce(p_now, now()));
            v_result := 'routed to class ' || p_class;
        END IF;
    END IF;
    PERFORM pgretention._audit('member.assign', v_qual,
        jsonb_build_object('value_hash', encode(sha256(convert_to(p_value, 'UTF8')), 'hex'),
                           'from', coalesce(m.class_name, t.default_class), 'to', p_class, 'result', v_result));
    RETURN v_result;
END
$$;

-- Stop managing a table; its data and partitions stay, pg_partman's configuration for it goes.
CREATE OR REPLACE FUNCTION pgretention.release_table(p_table text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
BEGIN
    PERFORM pgretention._forget_partman(ARRAY(SELECT format('%s.%s', parent_schema, parent_name)
                                              FROM pgretention.retention_class WHERE table_id = t.id));
    DELETE FROM pgretention.managed_table WHERE id = t.id;
    PERFORM pgretention._audit('table.release', format('%I.%I', t.table_schema, t.table_name), '{}');
END
$$;

-- Bring the LIST bounds of the given classes' partitions in line with class_member.routed_class,
-- in the caller's transaction, with the engine's lock_timeout (a busy table gives a clear error
-- and nothing changes). PostgreSQL verifies the re-attached partitions and the DEFAULT partition,
-- so a value is re-routed only while it has no stored rows (assign_member checks), and the cost
-- of re-routing grows with the size of those partitions (docs/partition-engine.md).
CREATE OR REPLACE FUNCTION pgretention._reroute(p_table_id int, p_classes text[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_qual text;
    v_list text[];
    v_lit text;
    v_empty boolean;
BEGIN
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    v_qual := format('%I.%I', t.table_schema, t.table_name);
    PERFORM pgretention._set_lock_timeout();
    FOR c IN SELECT * FROM pgretention.retention_class
             WHERE table_id = t.id AND class_name = ANY (p_classes) AND class_name <> t.default_class
             ORDER BY class_name LOOP
        v_list := ARRAY(SELECT value FROM pgretention.class_member
                        WHERE table_id = t.id AND routed_class = c.class_name ORDER BY value);
        v_lit := (SELECT string_agg(format('%L', x), ', ') FROM unnest(v_list) x);
        IF cardinality(v_list) = 0 THEN
            -- no member left: the class partition is empty (its last value had no rows); remove it
            IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_qual, c.parent_schema, c.parent_name);
                EXECUTE format('SELECT NOT EXISTS (SELECT FROM %I.%I)', c.parent_schema, c.parent_name) INTO v_empty;
                IF NOT v_empty THEN
                    RAISE EXCEPTION 'rows arrived in class partition %.% while it was re-routed; retry',
                        c.parent_schema, c.parent_name USING ERRCODE = 'object_not_in_prerequisite_state';
                END IF;
                PERFORM pgretention._forget_partman(ARRAY[format('%s.%s', c.parent_schema, c.parent_name)]);
                EXECUTE format('DROP TABLE %I.%I', c.parent_schema, c.parent_name);
            END IF;
        ELSIF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL THEN
            PERFORM pgretention._create_class_partition(t.id, c.class_name, v_list, date_trunc('day', p_now));
        ELSE
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_qual, c.parent_schema, c.parent_name);
            EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES IN (%s)', v_qual,
                           c.parent_schema, c.parent_name, v_lit);
        END IF;
    END LOOP;
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
