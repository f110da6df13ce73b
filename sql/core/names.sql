-- Names: identifiers pgretention accepts, 'schema.table' names, tables and columns that must exist,
-- and the tables and schemas a caller may have pgretention act on (_user_table, _user_schema).
-- Every error names the object it is about.
--
-- Names are exact, as PostgreSQL stores them (like quoted identifiers): pgretention does not fold
-- case, so an existing table "Calls" is named 'public.Calls'. New tables (table_create) get
-- lower-case names only, so that SQL without quotes finds them; a name that exists only in
-- another case gets a hint naming it.

-- The characters a name must not contain besides quotes, semicolons and backslashes: control
-- characters, and characters that are invisible or change the direction of the text around them
-- (format characters such as U+200B..U+200F, the bidi embeddings and overrides U+202A..U+202E and
-- isolates U+2066..U+2069, U+FEFF, variation selectors, tags, fillers): a name with them reads as
-- another name in audit records, reports and terminals.
CREATE OR REPLACE FUNCTION pgretention._hidden_chars()
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN getdatabaseencoding() = 'UTF8'
                THEN '[\u0001-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f'
                     '\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb'
                     '\U0001d173-\U0001d17a\U000e0000-\U000e0fff]'
                ELSE '[\u0001-\u001f\u007f]' END
$$;

-- A name as it can be shown safely: every hidden character written as <U+XXXX>.
CREATE OR REPLACE FUNCTION pgretention._visible(p_name text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(CASE WHEN c ~ pgretention._hidden_chars()
                           THEN format('<U+%s>', upper(lpad(to_hex(ascii(c)), greatest(4, length(to_hex(ascii(c)))), '0'))) ELSE c END, '' ORDER BY n)
    FROM regexp_split_to_table(p_name, '') WITH ORDINALITY AS x(c, n)
$$;

-- An identifier pgretention accepts: 1-63 bytes, no quote, semicolon, backslash, control, invisible
-- or direction-changing character.
CREATE OR REPLACE FUNCTION pgretention._check_ident(p_kind text, p_name text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR p_name = '' THEN
        RAISE EXCEPTION '% name must not be empty', p_kind USING ERRCODE = 'invalid_name';
    END IF;
    IF p_name ~ pgretention._hidden_chars() THEN
        RAISE EXCEPTION 'invalid % name %: control, invisible and direction-changing characters are not allowed'
            ' (they make a name read as another)', p_kind, quote_literal(pgretention._visible(p_name))
            USING ERRCODE = 'invalid_name';
    END IF;
    IF p_name ~ '["'';\\]' THEN
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
    IF p_table ~ pgretention._hidden_chars() THEN
        RAISE EXCEPTION 'invalid table name %: control, invisible and direction-changing characters are not allowed'
            ' (they make a name read as another)', quote_literal(pgretention._visible(p_table)) USING ERRCODE = 'invalid_name';
    END IF;
    IF p_table ~ '["'';\\]' THEN
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
-- This only finds the table: what a caller may have pgretention do with it is _user_table's.
CREATE OR REPLACE FUNCTION pgretention._relation(p_table text, p_what text DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_qual text := format('%I.%I', v_name.schema_name, v_name.table_name);
    v_oid regclass := to_regclass(v_qual);
    v_kind "char";
    v_other text;
BEGIN
    IF v_oid IS NULL THEN
        -- names are exact: point at a table whose name differs in case only
        SELECT format('%I.%I', n.nspname, c.relname) INTO v_other FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE lower(n.nspname) = lower(v_name.schema_name) AND lower(c.relname) = lower(v_name.table_name)
          AND c.relkind IN ('r', 'p') LIMIT 1;
        IF v_other IS NOT NULL THEN
            RAISE EXCEPTION '% does not exist', concat_ws(' ', p_what, 'table', v_qual) USING ERRCODE = 'undefined_table',
                HINT = format('names are exact (pgretention does not fold case): did you mean %s?', v_other);
        END IF;
        RAISE EXCEPTION '% does not exist', concat_ws(' ', p_what, 'table', v_qual) USING ERRCODE = 'undefined_table';
    END IF;
    SELECT c.relkind INTO v_kind FROM pg_class c WHERE c.oid = v_oid;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is %, not a table', v_qual,
            CASE v_kind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view' WHEN 'f' THEN 'a foreign table'
                        WHEN 'S' THEN 'a sequence' WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                        WHEN 'c' THEN 'a composite type' ELSE 'no ordinary or partitioned table' END
            USING ERRCODE = 'wrong_object_type';
    END IF;
    RETURN v_oid;
END
$$;

-- Tables and schemas a caller may have pgretention act on ------------------------------------
-- pgretention's functions run with the rights of the role that installed it. What they create,
-- change, delete or read on behalf of a caller is therefore limited here, in one place, and every
-- entry point that names a table or schema goes through it (docs/security.md):
--   * never the system's or pgretention's own objects: pg_catalog, information_schema, pg_toast,
--     temporary schemas, pgretention, pgretention_exec, the schemas of pg_partman and pg_cron, and
--     no relation that belongs to an extension;
--   * ordinary and partitioned tables only (not views, materialized views, foreign tables, ...);
--   * only tables whose owner the caller acts for: the login (session_user) has the rights of the
--     table's owner (pg_has_role ... 'USAGE'; a superuser has). An admin who manages an
--     application's tables is granted the application's owner role.

-- Why pgretention may not act on objects in a schema, or NULL when it may.
CREATE OR REPLACE FUNCTION pgretention._reserved_schema(p_schema name)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_schema IN ('pg_catalog', 'information_schema', 'pg_toast') THEN 'a system schema'
        WHEN p_schema ~ '^pg_(toast_)?temp' THEN 'a temporary schema'
        WHEN p_schema IN ('pgretention', 'pgretention_exec') THEN 'pgretention''s own schema'
        WHEN p_schema IN (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'pg_partman') THEN 'the schema of pg_partman'
        WHEN p_schema IN (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                          WHERE e.extname = 'pg_cron') OR p_schema = 'cron' THEN 'the schema of pg_cron'
    END
$$;

-- The table a caller names for pgretention to act on (register, manage, create partitions of,
-- adopt, delete from, read): it exists, is an ordinary or partitioned table outside the reserved
-- schemas and no extension's, and the caller acts for its owner. Otherwise an error naming the
-- table and what is missing; p_what says what the table is for ('dependant', 'subject table').
CREATE OR REPLACE FUNCTION pgretention._user_table(p_table text, p_what text DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_qual text := format('%I.%I', v_name.schema_name, v_name.table_name);
    v_rel regclass;
    v_schema name := v_name.schema_name;
    v_owner oid;
    v_persistence "char";
    v_reason text;
    v_ext name;
BEGIN
    v_reason := pgretention._reserved_schema(v_schema);
    IF v_reason IS NULL THEN
        v_rel := pgretention._relation(p_table, p_what);
        SELECT n.nspname, k.relowner, k.relpersistence INTO v_schema, v_owner, v_persistence
        FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace WHERE k.oid = v_rel;
        v_reason := pgretention._reserved_schema(v_schema);
    END IF;
    IF v_reason IS NOT NULL THEN
        RAISE EXCEPTION 'pgretention may not act on %: schema % is %', concat_ws(' ', p_what, v_qual),
            quote_ident(v_schema), v_reason USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF v_persistence = 't' THEN
        RAISE EXCEPTION 'pgretention may not act on %: it is a temporary table', concat_ws(' ', p_what, v_qual)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT e.extname INTO v_ext FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.classid = 'pg_class'::regclass AND d.objid = v_rel AND d.refclassid = 'pg_extension'::regclass
      AND d.deptype = 'e';
    IF FOUND THEN
        RAISE EXCEPTION 'pgretention may not act on %: it belongs to the extension %', concat_ws(' ', p_what, v_qual),
            quote_ident(v_ext) USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_has_role(session_user, v_owner, 'USAGE') THEN
        RAISE EXCEPTION 'role % may not act on %: it is not a member of its owner %; GRANT % TO %',
            quote_ident(session_user::text), concat_ws(' ', p_what, v_qual), quote_ident(pg_get_userbyid(v_owner)::text),
            quote_ident(pg_get_userbyid(v_owner)::text), quote_ident(session_user::text)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN v_rel;
END
$$;

-- A schema a caller has pgretention create tables in (table_create, archive schemas): it exists,
-- is not reserved, and the caller has CREATE on it. Returns the schema's name.
CREATE OR REPLACE FUNCTION pgretention._user_schema(p_schema text, p_what text DEFAULT 'schema')
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text;
BEGIN
    PERFORM pgretention._check_ident(p_what, p_schema);
    v_reason := pgretention._reserved_schema(p_schema);
    IF v_reason IS NOT NULL THEN
        RAISE EXCEPTION 'pgretention may not create tables in % %: it is %', p_what, quote_ident(p_schema), v_reason
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF to_regnamespace(quote_ident(p_schema)) IS NULL THEN
        RAISE EXCEPTION '% % does not exist', p_what, quote_ident(p_schema) USING ERRCODE = 'invalid_schema_name';
    END IF;
    IF NOT has_schema_privilege(session_user, to_regnamespace(quote_ident(p_schema)), 'CREATE') THEN
        RAISE EXCEPTION 'role % may not create tables in % %: it has no CREATE privilege on it; GRANT CREATE ON SCHEMA % TO %',
            quote_ident(session_user::text), p_what, quote_ident(p_schema), quote_ident(p_schema),
            quote_ident(session_user::text) USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN p_schema::name;
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
