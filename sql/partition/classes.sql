-- Retention classes of a managed table: the classes document checked, each class's partition
-- (LIST value or DEFAULT under the table) handed to pg_partman, classes added and changed.

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
    t := pgretention._table(p_table_id);
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
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
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

-- One class's definition ({"drop_after": ..., "anonymise_after": ...}) for class_add and class_set,
-- checked against the table's rules like the classes of table_create.
CREATE OR REPLACE FUNCTION pgretention._class_def(
    t pgretention.managed_table, p_class text, p_drop_after text, p_anonymise_after text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_def jsonb := jsonb_strip_nulls(jsonb_build_object('drop_after', p_drop_after, 'anonymise_after', p_anonymise_after));
BEGIN
    PERFORM pgretention._check_classes(format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object(p_class, v_def), p_class, t.class_column IS NOT NULL, t.min_drop_after, t.max_drop_after);
    RETURN v_def;
END
$$;

-- Add a retention class to a managed table (with its first members, if any).
CREATE OR REPLACE FUNCTION pgretention.class_add(
    p_table text, p_class text, p_drop_after text, p_anonymise_after text DEFAULT NULL,
    p_members text[] DEFAULT NULL, p_now timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
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
    v_def := pgretention._class_def(t, p_class, p_drop_after, p_anonymise_after);
    INSERT INTO pgretention.retention_class (table_id, class_name, anonymise_after, drop_after, parent_schema, parent_name)
    VALUES (t.id, p_class, p_anonymise_after::interval, p_drop_after::interval, t.table_schema,
            CASE WHEN t.layout = 'time' THEN t.table_name ELSE pgretention._class_relname(t.table_name, p_class) END);
    PERFORM pgretention._audit('class.add', format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', p_class, 'drop_after', p_drop_after, 'anonymise_after', p_anonymise_after));
    FOREACH v_member IN ARRAY coalesce(p_members, '{}') LOOP
        PERFORM pgretention.member_assign(p_table, v_member, p_class, p_now);
    END LOOP;
END
$$;

-- Change a class's periods. Shortening takes effect at the next run.
CREATE OR REPLACE FUNCTION pgretention.class_set(
    p_table text, p_class text, p_drop_after text, p_anonymise_after text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
    c pgretention.retention_class;
    v_def jsonb;
BEGIN
    c := pgretention._class(t.id, p_class, true);
    v_def := pgretention._class_def(t, p_class, p_drop_after, p_anonymise_after);
    UPDATE pgretention.retention_class
    SET drop_after = p_drop_after::interval, anonymise_after = p_anonymise_after::interval
    WHERE table_id = t.id AND class_name = p_class;
    PERFORM pgretention._audit('class.change', format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', p_class, 'old', jsonb_build_object('drop_after', c.drop_after, 'anonymise_after', c.anonymise_after),
                           'new', v_def));
END
$$;
