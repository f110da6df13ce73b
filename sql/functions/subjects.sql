-- Data subjects: which columns of which tables identify a person, how identifiers are normalised
-- and hashed, how a subject's rows are found, exported, erased or restricted.

-- Normalise an identifier of a kind, or raise an error naming it.
--   phone:   E.164 (+ and 7-15 digits); spaces, dashes, dots, brackets removed; 00 prefix -> +
--   email:   trimmed, lower case, one @ and a dot in the domain
--   account: trimmed, non-empty, at most 200 characters
--   ip:      IPv4 or IPv6 host address
CREATE OR REPLACE FUNCTION pgretention._normalize_identifier(p_kind text, p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
BEGIN
    IF p_value IS NULL OR btrim(p_value) = '' THEN
        RAISE EXCEPTION 'empty % identifier', coalesce(p_kind, '') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE p_kind
    WHEN 'phone' THEN
        v := regexp_replace(btrim(p_value), '[[:space:]().\-/]', '', 'g');
        IF left(v, 2) = '00' THEN
            v := '+' || substr(v, 3);
        END IF;
        IF v !~ '^\+[1-9][0-9]{6,14}$' THEN
            RAISE EXCEPTION 'malformed phone number %: expected E.164 such as +31612345678', quote_literal(p_value)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'email' THEN
        v := lower(btrim(p_value));
        IF v !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' THEN
            RAISE EXCEPTION 'malformed e-mail address %', quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'account' THEN
        v := btrim(p_value);
        IF length(v) > 200 THEN
            RAISE EXCEPTION 'account identifier longer than 200 characters' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'ip' THEN
        BEGIN
            v := host(btrim(p_value)::inet);
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'malformed IP address %', quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
        END;
    ELSE
        RAISE EXCEPTION 'unknown identifier kind %: expected phone, email, account or ip', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    RETURN v;
END
$$;

-- {"phone": ["+31 6 1234 5678"], "email": "A@B.nl"} -> {"phone": ["+31612345678"], "email": ["a@b.nl"]}
CREATE OR REPLACE FUNCTION pgretention._normalize_identifiers(p_identifiers jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text;
    v_values jsonb;
    v_out jsonb := '{}';
    v_list text[];
BEGIN
    IF p_identifiers IS NULL OR jsonb_typeof(p_identifiers) <> 'object' OR p_identifiers = '{}'::jsonb THEN
        RAISE EXCEPTION 'identifiers must be a JSON object such as {"phone": ["+31612345678"]}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_kind, v_values IN SELECT key, value FROM jsonb_each(p_identifiers) LOOP
        IF jsonb_typeof(v_values) = 'string' THEN
            v_values := jsonb_build_array(v_values);
        END IF;
        IF jsonb_typeof(v_values) <> 'array' OR jsonb_array_length(v_values) = 0 THEN
            RAISE EXCEPTION 'identifiers of kind % must be a non-empty list', quote_literal(v_kind)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_list := ARRAY(SELECT DISTINCT pgretention._normalize_identifier(v_kind, x)
                        FROM jsonb_array_elements_text(v_values) x ORDER BY 1);
        v_out := v_out || jsonb_build_object(v_kind, to_jsonb(v_list));
    END LOOP;
    RETURN v_out;
END
$$;

-- Keyed hash of a normalised identifier; the key is created on first use and readable by the owner only.
CREATE OR REPLACE FUNCTION pgretention._identifier_hash(p_kind text, p_value text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key bytea;
    v_crypto name := (SELECT pgcrypto_schema FROM pgretention.installation);
    v_hash text;
BEGIN
    SELECT key INTO v_key FROM pgretention.subject_hash_key WHERE id = 1;
    IF NOT FOUND THEN
        EXECUTE format('SELECT %I.gen_random_bytes(32)', v_crypto) INTO v_key;
        INSERT INTO pgretention.subject_hash_key (id, key) VALUES (1, v_key) ON CONFLICT (id) DO NOTHING;
        SELECT key INTO v_key FROM pgretention.subject_hash_key WHERE id = 1;
    END IF;
    EXECUTE format('SELECT encode(%I.hmac(convert_to($1, ''UTF8''), $2, ''sha256''), ''hex'')', v_crypto)
        INTO v_hash USING p_kind || ':' || p_value, v_key;
    RETURN v_hash;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._identifier_hashes(p_identifiers jsonb)
RETURNS text[]
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(pgretention._identifier_hash(k.key, v) ORDER BY k.key, v), '{}')
    FROM jsonb_each(p_identifiers) k CROSS JOIN LATERAL jsonb_array_elements_text(k.value) v
$$;

-- Register a table holding personal data: p_columns maps column -> kind, e.g.
-- {"caller": "phone", "callee": "phone"}. p_erasure: delete the subject's rows, or anonymise them
-- (statutory records: p_anonymise maps further columns to a replacement value or null).
CREATE OR REPLACE FUNCTION pgretention.register_subject_table(
    p_table text, p_columns jsonb, p_tenant_column text DEFAULT NULL, p_time_column text DEFAULT NULL,
    p_erasure text DEFAULT 'delete', p_anonymise jsonb DEFAULT '{}', p_note text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_qual text := format('%I.%I', v_name.schema_name, v_name.table_name);
    v_rel regclass := to_regclass(v_qual);
    v_col text;
    v_kind text;
    v_id int;
    v_time text := p_time_column;
    m pgretention.managed_table;
BEGIN
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'table % does not exist', v_qual USING ERRCODE = 'undefined_table';
    END IF;
    IF p_columns IS NULL OR jsonb_typeof(p_columns) <> 'object' OR p_columns = '{}'::jsonb THEN
        RAISE EXCEPTION 'identifier columns of table % must be a JSON object column -> kind', v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_erasure IS NULL OR p_erasure NOT IN ('delete', 'anonymise') THEN
        RAISE EXCEPTION 'erasure of table % must be delete or anonymise', v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_anonymise IS NULL OR jsonb_typeof(p_anonymise) <> 'object' THEN
        RAISE EXCEPTION 'anonymise of table % must be a JSON object column -> value', v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_col IN SELECT key FROM jsonb_each(p_columns) UNION SELECT key FROM jsonb_each(p_anonymise)
                 UNION SELECT c FROM unnest(ARRAY[p_tenant_column, p_time_column]) c WHERE c IS NOT NULL LOOP
        PERFORM pgretention._check_ident('column', v_col);
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = v_col
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column % does not exist in table %', quote_ident(v_col), v_qual
                USING ERRCODE = 'undefined_column';
        END IF;
    END LOOP;
    FOR v_col, v_kind IN SELECT key, value #>> '{}' FROM jsonb_each(p_columns) LOOP
        IF v_kind IS NULL OR v_kind NOT IN ('phone', 'email', 'account', 'ip') THEN
            RAISE EXCEPTION 'column % of table %: unknown identifier kind %', quote_ident(v_col), v_qual,
                coalesce(quote_literal(v_kind), 'NULL') USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    SELECT * INTO m FROM pgretention.managed_table WHERE table_schema = v_name.schema_name AND table_name = v_name.table_name;
    IF FOUND THEN
        v_time := coalesce(v_time, m.time_column);
    END IF;
    INSERT INTO pgretention.subject_table (table_schema, table_name, tenant_column, time_column, erasure, anonymise, statutory_note)
    VALUES (v_name.schema_name, v_name.table_name, p_tenant_column, v_time, p_erasure, p_anonymise, p_note)
    ON CONFLICT (table_schema, table_name) DO UPDATE SET tenant_column = excluded.tenant_column,
        time_column = excluded.time_column, erasure = excluded.erasure, anonymise = excluded.anonymise,
        statutory_note = excluded.statutory_note
    RETURNING id INTO v_id;
    DELETE FROM pgretention.subject_column WHERE table_id = v_id;
    INSERT INTO pgretention.subject_column (table_id, column_name, kind)
    SELECT v_id, key, value #>> '{}' FROM jsonb_each(p_columns);
    PERFORM pgretention._audit('subject.register_table', v_qual,
        jsonb_build_object('columns', p_columns, 'tenant_column', p_tenant_column, 'erasure', p_erasure,
                           'anonymise_columns', (SELECT jsonb_agg(k) FROM jsonb_object_keys(p_anonymise) k)));
    RETURN v_id;
END
$$;

-- The statements that create the missing indexes on identifier columns without blocking writers:
-- one CREATE INDEX CONCURRENTLY per leaf partition, then an index ON ONLY the parent with the leaf
-- indexes attached. Run them outside a transaction (`pgretention subject index` does).
CREATE OR REPLACE FUNCTION pgretention.subject_index_ddl(p_table text)
RETURNS TABLE (statement text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    st pgretention.subject_table;
    v_rel regclass;
    v_col text;
    v_leaf record;
    v_idx text;
    v_leaf_idx text[];
BEGIN
    SELECT * INTO st FROM pgretention.subject_table WHERE table_schema = v_name.schema_name AND table_name = v_name.table_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table %.% is not registered for subject requests', v_name.schema_name, v_name.table_name
            USING ERRCODE = 'undefined_table';
    END IF;
    v_rel := format('%I.%I', st.table_schema, st.table_name)::regclass;
    FOR v_col IN SELECT column_name FROM pgretention.subject_column WHERE table_id = st.id ORDER BY column_name LOOP
        IF pgretention._has_leading_index(v_rel, v_col) THEN
            CONTINUE;
        END IF;
        v_idx := left(st.table_name || '_' || v_col, 50) || '_pgr_idx';
        IF (SELECT relkind FROM pg_class WHERE oid = v_rel) = 'p' THEN
            v_leaf_idx := '{}';
            FOR v_leaf IN
                WITH RECURSIVE tree AS (
                    SELECT i.inhrelid AS rel FROM pg_inherits i WHERE i.inhparent = v_rel
                    UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.rel)
                SELECT tree.rel::regclass AS rel, c.relname FROM tree JOIN pg_class c ON c.oid = tree.rel
                WHERE c.relkind = 'r' ORDER BY c.relname
            LOOP
                IF NOT pgretention._has_leading_index(v_leaf.rel, v_col) THEN
                    statement := format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s (%I)',
                                        left(v_leaf.relname || '_' || v_col, 50) || '_pgr_idx', v_leaf.rel, v_col);
                    RETURN NEXT;
                END IF;
            END LOOP;
            -- the parent index: created ON ONLY (no lock on the leaves), then each leaf's index attached
            statement := format('CREATE INDEX IF NOT EXISTS %I ON ONLY %s (%I)', v_idx, v_rel, v_col);
            RETURN NEXT;
            statement := format('SELECT pgretention._attach_leaf_indexes(%L, %L, %L)', v_rel::text, v_idx, v_col);
            RETURN NEXT;
        ELSE
            statement := format('CREATE INDEX CONCURRENTLY IF NOT EXISTS %I ON %s (%I)', v_idx, v_rel, v_col);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._has_leading_index(p_rel regclass, p_col text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = p_rel AND a.attname = p_col)
$$;

-- Attach, level by level, every partition's index on p_col to the parent index p_index.
CREATE OR REPLACE FUNCTION pgretention._attach_leaf_indexes(p_parent text, p_index text, p_col text)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parent regclass := p_parent::regclass;
    v_pidx regclass;
    r record;
    v_child_idx regclass;
    n int := 0;
BEGIN
    v_pidx := (SELECT c.oid FROM pg_class c WHERE c.relname = p_index
               AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = v_parent))::regclass;
    FOR r IN SELECT i.inhrelid::regclass AS child, c.relkind FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = v_parent LOOP
        SELECT x.indexrelid::regclass INTO v_child_idx FROM pg_index x
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
        WHERE x.indrelid = r.child AND a.attname = p_col AND x.indnatts = 1
          AND NOT EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = x.indexrelid)
        LIMIT 1;
        IF v_child_idx IS NULL AND r.relkind = 'p' THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON ONLY %s (%I)',
                           left(split_part(r.child::text, '.', 2) || '_' || p_col, 50) || '_pgr_idx', r.child, p_col);
            PERFORM pgretention._attach_leaf_indexes(r.child::text,
                left(split_part(r.child::text, '.', 2) || '_' || p_col, 50) || '_pgr_idx', p_col);
            SELECT x.indexrelid::regclass INTO v_child_idx FROM pg_index x
            JOIN pg_class k ON k.oid = x.indexrelid
            WHERE x.indrelid = r.child AND k.relname = left(split_part(r.child::text, '.', 2) || '_' || p_col, 50) || '_pgr_idx';
        END IF;
        IF v_child_idx IS NOT NULL THEN
            EXECUTE format('ALTER INDEX %s ATTACH PARTITION %s', v_pidx, v_child_idx);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.register_tenant(p_name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR btrim(p_name) = '' THEN
        RAISE EXCEPTION 'tenant name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgretention.tenant (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pgretention._audit('tenant.register', p_name, '{}');
    END IF;
END
$$;

-- WHERE condition (over alias t) for the rows of a registered table about the given subject.
CREATE OR REPLACE FUNCTION pgretention._subject_condition(p_table_id int, p_identifiers jsonb, p_tenant text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table;
    v_parts text[] := '{}';
    c record;
    v_cond text;
BEGIN
    SELECT * INTO st FROM pgretention.subject_table WHERE id = p_table_id;
    FOR c IN SELECT sc.column_name, sc.kind FROM pgretention.subject_column sc WHERE sc.table_id = p_table_id
             ORDER BY sc.column_name LOOP
        IF p_identifiers ? c.kind THEN
            v_parts := v_parts || format('t.%I::text = ANY (%L::text[])', c.column_name,
                ARRAY(SELECT jsonb_array_elements_text(p_identifiers -> c.kind)));
        END IF;
    END LOOP;
    IF cardinality(v_parts) = 0 THEN
        RETURN NULL;  -- no column of this table can identify this subject
    END IF;
    v_cond := '(' || array_to_string(v_parts, ' OR ') || ')';
    IF p_tenant IS NOT NULL THEN
        IF st.tenant_column IS NULL THEN
            RETURN NULL;  -- a processor's request covers the customer's data only
        END IF;
        v_cond := v_cond || format(' AND t.%I::text = %L', st.tenant_column, p_tenant);
    END IF;
    RETURN v_cond;
END
$$;

-- Every row about a subject in every registered table and partition, plus rows kept in the hold
-- store from dropped partitions. Streamed by the CLI for large results.
CREATE OR REPLACE FUNCTION pgretention.subject_rows(p_identifiers jsonb, p_tenant text DEFAULT NULL)
RETURNS TABLE (table_name text, row_data jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids jsonb := pgretention._normalize_identifiers(p_identifiers);
    st pgretention.subject_table;
    v_cond text;
BEGIN
    IF p_tenant IS NOT NULL AND NOT EXISTS (SELECT FROM pgretention.tenant WHERE name = p_tenant) THEN
        RAISE EXCEPTION 'unknown tenant %', quote_literal(p_tenant) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR st IN SELECT * FROM pgretention.subject_table ORDER BY table_schema, table_name LOOP
        v_cond := pgretention._subject_condition(st.id, v_ids, p_tenant);
        CONTINUE WHEN v_cond IS NULL;
        RETURN QUERY EXECUTE format('SELECT %L::text, to_jsonb(t) FROM %I.%I t WHERE %s',
            format('%I.%I', st.table_schema, st.table_name), st.table_schema, st.table_name, v_cond);
        RETURN QUERY EXECUTE format('SELECT %L::text, h.row_data FROM pgretention.hold_store h'
            ' CROSS JOIN LATERAL jsonb_populate_record(NULL::%I.%I, h.row_data) t'
            ' WHERE h.table_schema = %L AND h.table_name = %L AND %s',
            'held:' || format('%I.%I', st.table_schema, st.table_name), st.table_schema, st.table_name,
            st.table_schema, st.table_name, v_cond);
    END LOOP;
END
$$;

-- Erase a subject everywhere: delete (or anonymise, for statutory records) every row about it
-- except rows under legal hold. Returns counts per table; raises nothing for held rows.
CREATE OR REPLACE FUNCTION pgretention._erase_subject(p_identifiers jsonb, p_tenant text, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    st pgretention.subject_table;
    v_cond text;
    v_hold text;
    v_set text;
    v_n bigint;
    v_held bigint;
    v_out jsonb := '{}';
    c record;
BEGIN
    PERFORM pgretention._set_lock_timeout();
    FOR st IN SELECT * FROM pgretention.subject_table ORDER BY table_schema, table_name LOOP
        v_cond := pgretention._subject_condition(st.id, p_identifiers, p_tenant);
        CONTINUE WHEN v_cond IS NULL;
        v_hold := pgretention._hold_predicate(st.table_schema, st.table_name, p_now);
        EXECUTE format('SELECT count(*) FROM %I.%I t WHERE (%s) AND (%s)', st.table_schema, st.table_name, v_cond, v_hold)
            INTO v_held;
        IF st.erasure = 'delete' THEN
            EXECUTE format('DELETE FROM %I.%I t WHERE (%s) AND NOT (%s)', st.table_schema, st.table_name, v_cond, v_hold);
        ELSE
            v_set := NULL;
            FOR c IN SELECT a.attname, a.attnotnull, sc.kind IS NOT NULL AS is_identifier, st.anonymise ? a.attname AS mapped
                     FROM pg_attribute a
                     LEFT JOIN pgretention.subject_column sc ON sc.table_id = st.id AND sc.column_name = a.attname
                     WHERE a.attrelid = format('%I.%I', st.table_schema, st.table_name)::regclass AND a.attnum > 0
                       AND NOT a.attisdropped AND (sc.kind IS NOT NULL OR st.anonymise ? a.attname) LOOP
                v_set := concat_ws(', ', v_set, format('%I = %s', c.attname,
                    CASE WHEN c.mapped AND st.anonymise ->> c.attname IS NOT NULL THEN format('%L', st.anonymise ->> c.attname)
                         WHEN c.mapped OR NOT c.attnotnull THEN 'NULL'
                         ELSE quote_literal('erased') END));
            END LOOP;
            EXECUTE format('UPDATE %I.%I t SET %s WHERE (%s) AND NOT (%s)', st.table_schema, st.table_name,
                           v_set, v_cond, v_hold);
        END IF;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_out := v_out || jsonb_build_object(format('%I.%I', st.table_schema, st.table_name),
            jsonb_build_object(CASE WHEN st.erasure = 'delete' THEN 'deleted' ELSE 'anonymised' END, v_n, 'held', v_held));
    END LOOP;
    RETURN v_out;
END
$$;

-- Applications exclude restricted subjects with this check (or the views below).
CREATE OR REPLACE FUNCTION pgretention.is_restricted(p_kind text, p_value text)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM pgretention.restriction r WHERE r.kind = p_kind AND r.value = p_value) $$;

-- Create <table>_unrestricted: the table without rows of restricted subjects, for applications.
CREATE OR REPLACE FUNCTION pgretention.create_unrestricted_view(p_table text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    st pgretention.subject_table;
    v_view text;
    v_cond text;
BEGIN
    SELECT * INTO st FROM pgretention.subject_table WHERE table_schema = v_name.schema_name AND table_name = v_name.table_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table %.% is not registered for subject requests', v_name.schema_name, v_name.table_name
            USING ERRCODE = 'undefined_table';
    END IF;
    v_view := left(st.table_name, 49) || '_unrestricted';
    SELECT string_agg(format('NOT EXISTS (SELECT FROM pgretention.restriction r WHERE r.kind = %L AND r.value = t.%I::text)',
                             sc.kind, sc.column_name), ' AND ' ORDER BY sc.column_name)
      INTO v_cond FROM pgretention.subject_column sc WHERE sc.table_id = st.id;
    EXECUTE format('CREATE OR REPLACE VIEW %I.%I WITH (security_barrier) AS SELECT t.* FROM %I.%I t WHERE %s',
                   st.table_schema, v_view, st.table_schema, st.table_name, v_cond);
    PERFORM pgretention._audit('subject.create_view', format('%I.%I', st.table_schema, v_view), '{}');
    RETURN format('%I.%I', st.table_schema, v_view);
END
$$;
