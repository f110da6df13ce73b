-- Validation and naming helpers shared by the engines. Every error names the object it is about.

-- An identifier pgretention accepts: 1-63 bytes, no quote, semicolon, backslash or control character.
CREATE OR REPLACE FUNCTION pgretention._check_ident(p_kind text, p_name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR p_name = '' THEN
        RAISE EXCEPTION '% name must not be empty', p_kind USING ERRCODE = 'invalid_name';
    END IF;
    IF p_name ~ '["'';\\[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid % name %: quotes, semicolons, backslashes and control characters are not allowed',
            p_kind, quote_literal(p_name) USING ERRCODE = 'invalid_name';
    END IF;
    IF octet_length(p_name) > 63 THEN
        RAISE EXCEPTION 'invalid % name %: longer than 63 bytes', p_kind, quote_literal(p_name)
            USING ERRCODE = 'invalid_name';
    END IF;
    RETURN p_name;
END
$$;

-- 'schema.table' or 'table' (meaning public.table) -> (schema, table). Double quotes are refused.
CREATE OR REPLACE FUNCTION pgretention._split_name(p_table text, OUT schema_name text, OUT table_name text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parts text[];
BEGIN
    IF p_table IS NULL OR p_table = '' THEN
        RAISE EXCEPTION 'table name must not be empty' USING ERRCODE = 'invalid_name';
    END IF;
    IF p_table ~ '["'';\\[:cntrl:]]' THEN
        RAISE EXCEPTION 'invalid table name %: quotes, semicolons, backslashes and control characters are not allowed',
            quote_literal(p_table) USING ERRCODE = 'invalid_name';
    END IF;
    v_parts := string_to_array(p_table, '.');
    IF cardinality(v_parts) = 1 THEN
        schema_name := 'public';
        table_name := v_parts[1];
    ELSIF cardinality(v_parts) = 2 THEN
        schema_name := v_parts[1];
        table_name := v_parts[2];
    ELSE
        RAISE EXCEPTION 'invalid table name %: expected schema.table', quote_literal(p_table)
            USING ERRCODE = 'invalid_name';
    END IF;
    PERFORM pgretention._check_ident('schema', schema_name);
    PERFORM pgretention._check_ident('table', table_name);
END
$$;

-- A positive interval, or an error naming what it is for.
CREATE OR REPLACE FUNCTION pgretention._parse_interval(p_what text, p_value text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v interval;
BEGIN
    IF p_value IS NULL OR btrim(p_value) = '' THEN
        RAISE EXCEPTION '% must be given', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        v := p_value::interval;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'invalid % %: expected an interval such as ''1 day'' or ''13 months''',
            p_what, quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
    END;
    IF v <= interval '0' THEN
        RAISE EXCEPTION 'invalid % %: must be positive', p_what, quote_literal(p_value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v > interval '200 years' THEN
        RAISE EXCEPTION 'invalid % %: longer than 200 years', p_what, quote_literal(p_value)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._check_class_name(p_class text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_class IS NULL OR p_class !~ '^[a-z][a-z0-9_]{0,29}$' THEN
        RAISE EXCEPTION 'invalid class name %: use 1-30 lower-case letters, digits and _ starting with a letter',
            coalesce(quote_literal(p_class), 'NULL') USING ERRCODE = 'invalid_name';
    END IF;
    RETURN p_class;
END
$$;

-- The managed table row for a name, or 'table X is not managed by pgretention'.
CREATE OR REPLACE FUNCTION pgretention._managed(p_table text)
RETURNS pgretention.managed_table
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record;
    v_row pgretention.managed_table;
BEGIN
    v_name := pgretention._split_name(p_table);
    SELECT * INTO v_row FROM pgretention.managed_table m
    WHERE m.table_schema = v_name.schema_name AND m.table_name = v_name.table_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table %.% is not managed by pgretention', v_name.schema_name, v_name.table_name
            USING ERRCODE = 'undefined_table';
    END IF;
    RETURN v_row;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._qualified(p_schema name, p_name name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('%I.%I', p_schema, p_name) $$;

-- A partition bound literal of the time column (text as PostgreSQL prints it) -> absolute time.
-- timestamp and date columns hold wall-clock time of the table's zone.
CREATE OR REPLACE FUNCTION pgretention._to_abs(p_value text, p_type text, p_zone text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN CASE p_type
        WHEN 'timestamptz' THEN p_value::timestamptz
        WHEN 'timestamp' THEN p_value::timestamp AT TIME ZONE p_zone
        WHEN 'date' THEN p_value::date::timestamp AT TIME ZONE p_zone
        -- epoch seconds; the lowest integers (a historical partition's lower bound) mean -infinity
        WHEN 'epoch' THEN CASE WHEN p_value::numeric < -210866803200 THEN '-infinity'::timestamptz
                               ELSE to_timestamp(p_value::float8) END
    END;
END
$$;

-- Absolute time -> a literal of the column's type, for comparisons in dynamic SQL.
CREATE OR REPLACE FUNCTION pgretention._typed_literal(p_abs timestamptz, p_type text, p_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    RETURN CASE p_type
        WHEN 'timestamptz' THEN format('%L::timestamptz', p_abs)
        WHEN 'timestamp' THEN format('%L::timestamp', p_abs AT TIME ZONE p_zone)
        -- a row dated d covers the whole day: it is older than the cutoff when d < cutoff's day
        WHEN 'date' THEN format('%L::date', (p_abs AT TIME ZONE p_zone)::date)
        -- a row at second e covers that whole second: older than the cutoff when e < floor(cutoff)
        WHEN 'epoch' THEN format('%L::bigint', floor(extract(epoch FROM p_abs))::bigint)
    END;
END
$$;

-- Name of a class's partition: <table>_<class>, shortened so pg_partman's suffix still fits.
CREATE OR REPLACE FUNCTION pgretention._class_relname(p_table name, p_class text)
RETURNS name
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (left(p_table, 40 - length(p_class)) || '_' || p_class)::name $$;

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
    EXECUTE format('SELECT %I.%I(%s)::text', v_schema, p_func, array_to_string(v_parts, ', ')) INTO v_result;
    -- pg_partman saves and restores search_path with a session-level set_config, which would leave
    -- this function's fixed search_path in the caller's session. Put the session default back, and
    -- keep the fixed one for the rest of this transaction's pgretention code.
    PERFORM set_config('search_path', (SELECT s.reset_val FROM pg_settings s WHERE s.name = 'search_path'), false);
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    RETURN v_result;
END
$$;

-- Parse a column list like 'id bigint, started_at timestamptz NOT NULL, amount numeric(10,2)'.
-- Names: plain identifiers (folded to lower case) or double-quoted without quotes or semicolons
-- inside; types must resolve with to_regtype. Returns the column definitions, safely quoted.
CREATE OR REPLACE FUNCTION pgretention._column_defs(p_columns text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_item text;
    v_m text[];
    v_name text;
    v_type text;
    v_out text[] := '{}';
BEGIN
    IF p_columns IS NULL OR btrim(p_columns) = '' THEN
        RAISE EXCEPTION 'column list must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_item IN SELECT btrim(x) FROM regexp_split_to_table(p_columns, ',(?![^()]*\))') AS x LOOP
        v_m := regexp_match(v_item,
            '^([A-Za-z_][A-Za-z0-9_]*|"[^";\\]+")\s+([A-Za-z][A-Za-z0-9_ ]*?(\(\s*[0-9]+\s*(,\s*[0-9]+\s*)?\))?(\[\])?)(\s+NOT\s+NULL)?$', 'i');
        IF v_m IS NULL THEN
            RAISE EXCEPTION 'invalid column definition %: expected "name type [NOT NULL]"', quote_literal(v_item)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_name := CASE WHEN left(v_m[1], 1) = '"' THEN substr(v_m[1], 2, length(v_m[1]) - 2) ELSE lower(v_m[1]) END;
        PERFORM pgretention._check_ident('column', v_name);
        v_type := v_m[2];
        IF to_regtype(v_type) IS NULL THEN
            RAISE EXCEPTION 'unknown type % for column %', quote_literal(v_type), quote_ident(v_name)
                USING ERRCODE = 'undefined_object';
        END IF;
        v_out := v_out || (format('%I ', v_name) || v_type || CASE WHEN v_m[6] IS NOT NULL THEN ' NOT NULL' ELSE '' END);
    END LOOP;
    RETURN array_to_string(v_out, ', ');
END
$$;
