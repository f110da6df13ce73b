-- Names: identifiers pgretention accepts, 'schema.table' names, tables and columns that must exist.
-- Every error names the object it is about.

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

CREATE OR REPLACE FUNCTION pgretention._qualified(p_schema name, p_name name)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('%I.%I', p_schema, p_name) $$;

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

-- Name of a class's partition: <table>_<class>, shortened so pg_partman's suffix still fits.
CREATE OR REPLACE FUNCTION pgretention._class_relname(p_table name, p_class text)
RETURNS name
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (left(p_table, 40 - length(p_class)) || '_' || p_class)::name $$;

-- The regclass of an existing table (ordinary or partitioned) named 'schema.table' or 'table', or
-- an error naming it; p_what says what the table is for ('rule table crm.x does not exist').
CREATE OR REPLACE FUNCTION pgretention._relation(p_table text, p_what text DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_qual text := format('%I.%I', v_name.schema_name, v_name.table_name);
    v_oid regclass := to_regclass(v_qual);
BEGIN
    IF v_oid IS NULL THEN
        RAISE EXCEPTION '% does not exist', concat_ws(' ', p_what, 'table', v_qual) USING ERRCODE = 'undefined_table';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = v_oid) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', v_qual USING ERRCODE = 'wrong_object_type';
    END IF;
    RETURN v_oid;
END
$$;

-- The type of a column of a table (format_type, with its modifier unless p_typmod is false), or an
-- error naming the column and the table, and what the column was for when p_what is given.
CREATE OR REPLACE FUNCTION pgretention._column_type(p_table regclass, p_column text, p_what text DEFAULT NULL,
                                                    p_typmod boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_type text;
BEGIN
    PERFORM pgretention._check_ident('column', p_column);
    SELECT format_type(a.atttypid, CASE WHEN p_typmod THEN a.atttypmod END) INTO v_type
    FROM pg_attribute a
    WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND AND p_what IS NULL THEN
        RAISE EXCEPTION 'column % does not exist in table %', quote_ident(p_column), p_table
            USING ERRCODE = 'undefined_column';
    ELSIF NOT FOUND THEN
        RAISE EXCEPTION 'column % of table % does not exist (%)', quote_ident(p_column), p_table, p_what
            USING ERRCODE = 'undefined_column';
    END IF;
    RETURN v_type;
END
$$;
