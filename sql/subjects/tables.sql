-- Tables that hold personal data: which columns identify a subject and of what kind, how erasure
-- treats them (delete or anonymise), the indexes that make a subject's rows quick to find, and
-- the tenants (customers of a processor) whose requests cover their data only.

-- Register a table holding personal data: p_columns maps column -> kind, e.g.
-- {"caller": "phone", "callee": "phone"}. p_erasure: delete the subject's rows, or anonymise them
-- (statutory records: p_anonymise maps further columns to a replacement value or null). Requests
-- read, delete and update the table with pgretention's rights: the caller must act for its owner,
-- and system and pgretention tables are refused (_user_table, core/names.sql).
CREATE OR REPLACE FUNCTION pgretention.subject_table_register(
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
    v_rel regclass := pgretention._user_table(p_table, 'subject table');
    v_col text;
    v_kind text;
    v_id int;
    v_time text := p_time_column;
    m pgretention.managed_table;
BEGIN
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
        PERFORM pgretention._column_type(v_rel, v_col);
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
    INSERT INTO pgretention.subject_table (table_schema, table_name, relid, tenant_column, time_column, erasure, anonymise,
                                           statutory_note)
    VALUES (v_name.schema_name, v_name.table_name, v_rel, p_tenant_column, v_time, p_erasure, p_anonymise, p_note)
    ON CONFLICT (table_schema, table_name) DO UPDATE SET relid = excluded.relid, tenant_column = excluded.tenant_column,
        time_column = excluded.time_column, erasure = excluded.erasure, anonymise = excluded.anonymise,
        statutory_note = excluded.statutory_note
    RETURNING id INTO v_id;
    DELETE FROM pgretention.subject_column WHERE table_id = v_id;
    INSERT INTO pgretention.subject_column (table_id, column_name, kind)
    SELECT v_id, key, value #>> '{}' FROM jsonb_each(p_columns);
    IF m.id IS NOT NULL THEN
        PERFORM pgretention._rollup_recheck(m.id);  -- no roll-up may keep what now identifies people
    END IF;
    PERFORM pgretention._audit('subject.register_table', v_qual,
        jsonb_build_object('columns', p_columns, 'tenant_column', p_tenant_column, 'erasure', p_erasure,
                           'anonymise_columns', (SELECT jsonb_agg(k) FROM jsonb_object_keys(p_anonymise) k)));
    RETURN v_id;
END
$$;

-- Stop treating a table as holding personal data: requests no longer look at it. For a table
-- that still exists the caller must act for its owner; a dropped or renamed one (its name no
-- longer resolves), or one in a schema pgretention may not act on (registered by an earlier
-- release), any admin may unregister. Rows kept for it in the hold store stay until their
-- holds end. Audited.
CREATE OR REPLACE FUNCTION pgretention.subject_table_unregister(p_table text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table := pgretention._registered(p_table);
    v_qual text := format('%I.%I', st.table_schema, st.table_name);
    v_problem text := pgretention._subject_problem(st.id);
BEGIN
    IF to_regclass(v_qual) IS NOT NULL AND pgretention._reserved_schema(st.table_schema) IS NULL THEN
        PERFORM pgretention._user_table(st.table_schema || '.' || st.table_name, 'subject table');
    END IF;
    DELETE FROM pgretention.subject_table WHERE id = st.id;
    PERFORM pgretention._audit('subject.unregister_table', v_qual, jsonb_build_object(
        'columns', (SELECT coalesce(jsonb_object_agg(c.column_name, c.kind), '{}') FROM pgretention.subject_column c
                    WHERE c.table_id = st.id),
        'problem', v_problem));
END
$$;

-- The registered tables requests look at: every one whose table exists under its name. A table
-- that was dropped holds no rows any more and is left out (the report flags it: unregister it);
-- one that is still there but can no longer be searched (renamed, an identifier column renamed,
-- in a schema pgretention may not act on) stops the request with an error saying what to fix:
-- answering without it would report a subject's data as erased or exported while it is kept.
CREATE OR REPLACE FUNCTION pgretention._subject_tables()
RETURNS SETOF pgretention.subject_table
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table;
    v_problem text;
BEGIN
    FOR st IN SELECT * FROM pgretention.subject_table s ORDER BY s.table_schema, s.table_name LOOP
        v_problem := pgretention._subject_problem(st.id);
        IF v_problem IS NULL THEN
            RETURN NEXT st;
        ELSIF NOT pgretention._subject_dropped(st.id) THEN
            RAISE EXCEPTION 'registered table %.% cannot be searched: %', quote_ident(st.table_schema),
                quote_ident(st.table_name), v_problem USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;
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
    st pgretention.subject_table;
    v_rel regclass;
    v_col text;
    v_leaf record;
    v_idx text;
    v_leaf_idx text[];
BEGIN
    st := pgretention._registered(p_table);
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
            statement := format('SELECT pgretention._attach_leaf_indexes(%L, %L, %L)',
                                st.table_schema || '.' || st.table_name, v_idx, v_col);
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

-- Attach, level by level, every partition's index on p_col to the parent index p_index (the last
-- statement of subject_index_ddl). The admin calls it: p_parent must be a table it may act on
-- (_user_table).
CREATE OR REPLACE FUNCTION pgretention._attach_leaf_indexes(p_parent text, p_index text, p_col text)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgretention._check_ident('index', p_index);
    PERFORM pgretention._check_ident('column', p_col);
    RETURN pgretention._attach_leaf_indexes_of(pgretention._user_table(p_parent, 'partitioned table'), p_index, p_col);
END
$$;

CREATE OR REPLACE FUNCTION pgretention._attach_leaf_indexes_of(p_parent regclass, p_index text, p_col text)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parent regclass := p_parent;
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
            PERFORM pgretention._attach_leaf_indexes_of(r.child,
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

CREATE OR REPLACE FUNCTION pgretention.tenant_register(p_name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_name IS NULL OR btrim(p_name) = '' THEN
        RAISE EXCEPTION 'tenant name must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_name ~ pgretention._hidden_chars() THEN
        RAISE EXCEPTION 'invalid tenant name %: control, invisible and direction-changing characters are not allowed',
            quote_literal(pgretention._visible(p_name)) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgretention.tenant (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pgretention._audit('tenant.register', p_name, '{}');
    END IF;
END
$$;

-- The report's check of registered tables: one that can no longer be searched (renamed, an
-- identifier column renamed) is a violation, requests stop on it; one that was dropped is a
-- warning (nothing left to find; unregister it).
CREATE OR REPLACE FUNCTION pgretention.report_check_subject_tables(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table;
BEGIN
    FOR st IN SELECT * FROM pgretention.subject_table s ORDER BY s.table_schema, s.table_name LOOP
        message := pgretention._subject_problem(st.id);
        CONTINUE WHEN message IS NULL;
        section := 'subject_tables';
        object := format('%I.%I', st.table_schema, st.table_name);
        IF pgretention._subject_dropped(st.id) THEN
            severity := 'warning'; check_name := 'subject_table_dropped';
        ELSE
            severity := 'violation'; check_name := 'subject_table_broken';
            message := message || '; subject requests stop until it is fixed';
        END IF;
        value := NULL;
        RETURN NEXT;
    END LOOP;
END
$$;
