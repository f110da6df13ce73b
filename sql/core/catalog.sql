-- Catalog rows loaded in one place: a managed table (by name or id), a retention class, a subject
-- request, a legal hold, a subject table, an entity rule. Each returns the row or raises an error naming the object;
-- p_lock takes the row FOR UPDATE (the caller changes it).

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

-- The managed table row for a change of its policy (classes, members, interval, anonymiser rules,
-- roll-ups, undoing an adoption): as _managed, and the caller must act for the table's owner
-- (_user_table, core/names.sql).
CREATE OR REPLACE FUNCTION pgretention._managed_own(p_table text)
RETURNS pgretention.managed_table
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.managed_table := pgretention._managed(p_table);
BEGIN
    PERFORM pgretention._user_table(v_row.table_schema || '.' || v_row.table_name, 'managed table');
    RETURN v_row;
END
$$;

-- The managed table row for an id (internal callers pass ids from the catalog).
CREATE OR REPLACE FUNCTION pgretention._table(p_table_id int)
RETURNS pgretention.managed_table
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.managed_table;
BEGIN
    SELECT * INTO v_row FROM pgretention.managed_table m WHERE m.id = p_table_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'managed table % does not exist', coalesce(p_table_id::text, 'NULL')
            USING ERRCODE = 'undefined_table';
    END IF;
    RETURN v_row;
END
$$;

-- A retention class of a managed table, or 'class X does not exist for table Y'.
CREATE OR REPLACE FUNCTION pgretention._class(p_table_id int, p_class text, p_lock boolean DEFAULT false)
RETURNS pgretention.retention_class
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.retention_class;
    t pgretention.managed_table;
BEGIN
    IF p_lock THEN
        SELECT * INTO v_row FROM pgretention.retention_class k
        WHERE k.table_id = p_table_id AND k.class_name = p_class FOR UPDATE;
    ELSE
        SELECT * INTO v_row FROM pgretention.retention_class k WHERE k.table_id = p_table_id AND k.class_name = p_class;
    END IF;
    IF NOT FOUND THEN
        t := pgretention._table(p_table_id);
        RAISE EXCEPTION 'class % does not exist for table %', coalesce(quote_literal(p_class), 'NULL'),
            format('%I.%I', t.table_schema, t.table_name) USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_row;
END
$$;

-- A data-subject request, or 'request N does not exist'.
CREATE OR REPLACE FUNCTION pgretention._request(p_request bigint, p_lock boolean DEFAULT false)
RETURNS pgretention.subject_request
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.subject_request;
BEGIN
    IF p_lock THEN
        SELECT * INTO v_row FROM pgretention.subject_request r WHERE r.id = p_request FOR UPDATE;
    ELSE
        SELECT * INTO v_row FROM pgretention.subject_request r WHERE r.id = p_request;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'request % does not exist', coalesce(p_request::text, 'NULL') USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_row;
END
$$;

-- A legal hold, or 'legal hold N does not exist'.
CREATE OR REPLACE FUNCTION pgretention._hold(p_hold bigint, p_lock boolean DEFAULT false)
RETURNS pgretention.legal_hold
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.legal_hold;
BEGIN
    IF p_lock THEN
        SELECT * INTO v_row FROM pgretention.legal_hold h WHERE h.id = p_hold FOR UPDATE;
    ELSE
        SELECT * INTO v_row FROM pgretention.legal_hold h WHERE h.id = p_hold;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'legal hold % does not exist', coalesce(p_hold::text, 'NULL') USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_row;
END
$$;

-- A table registered for subject requests, by name, or 'table X is not registered for subject requests'.
CREATE OR REPLACE FUNCTION pgretention._registered(p_table text)
RETURNS pgretention.subject_table
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_row pgretention.subject_table;
BEGIN
    SELECT * INTO v_row FROM pgretention.subject_table s
    WHERE s.table_schema = v_name.schema_name AND s.table_name = v_name.table_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table %.% is not registered for subject requests', v_name.schema_name, v_name.table_name
            USING ERRCODE = 'undefined_table';
    END IF;
    RETURN v_row;
END
$$;

-- The entity rule row for a name, or 'entity rule X does not exist'.
CREATE OR REPLACE FUNCTION pgretention._rule(p_name text)
RETURNS pgretention.entity_rule
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.entity_rule;
BEGIN
    SELECT * INTO v_row FROM pgretention.entity_rule r WHERE r.rule_name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'entity rule % does not exist', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_row;
END
$$;

-- Broken tables ------------------------------------------------------------------------------
-- A managed or subject table is named by schema and name; its owner may rename it, move it to
-- another schema, drop it, or rename its columns. Such a table is reported, never silently left
-- out: status, plan and the report name it and what to do (_table_problem), and requests stop
-- with the same message when a registered table can no longer be searched (_subject_tables).
-- relid (the OID when it was registered) says where a renamed table went.

-- The relation with OID p_relid when it is still a table that has the given columns: where a
-- registered table went when its name no longer resolves. NULL when there is none (dropped; or,
-- after a dump and restore, an OID that now names something else).
CREATE OR REPLACE FUNCTION pgretention._moved_to(p_relid oid, p_columns name[])
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.oid::regclass FROM pg_class c
    WHERE c.oid = p_relid AND c.relkind IN ('r', 'p')
      AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                                 AND a.attname = ANY (p_columns)) = cardinality(p_columns)
$$;

-- Why a table registered for subject requests cannot be searched, or NULL when it can.
CREATE OR REPLACE FUNCTION pgretention._subject_problem(p_id int)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st pgretention.subject_table;
    v_qual text;
    v_rel regclass;
    v_cols name[];
    v_moved regclass;
    v_col name;
BEGIN
    SELECT * INTO st FROM pgretention.subject_table s WHERE s.id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_qual := format('%I.%I', st.table_schema, st.table_name);
    v_cols := ARRAY(SELECT c.column_name FROM pgretention.subject_column c WHERE c.table_id = st.id
                    UNION SELECT x FROM unnest(ARRAY[st.tenant_column, st.time_column]) x WHERE x IS NOT NULL
                    UNION SELECT k::name FROM jsonb_object_keys(st.anonymise) k ORDER BY 1);
    IF pgretention._reserved_schema(st.table_schema) IS NOT NULL THEN
        RETURN format('schema %I is %s, which pgretention may not act on: unregister the table', st.table_schema,
                      pgretention._reserved_schema(st.table_schema));
    END IF;
    v_rel := to_regclass(v_qual);
    IF v_rel IS NULL THEN
        v_moved := pgretention._moved_to(st.relid, v_cols);
        IF v_moved IS NOT NULL THEN
            RETURN format('it was renamed or moved and is now %s: register %s (subject_table_register) and unregister'
                          ' %s (subject_table_unregister)', v_moved, v_moved, v_qual);
        END IF;
        RETURN format('it no longer exists (dropped?): unregister it (subject_table_unregister)');
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = v_rel) NOT IN ('r', 'p') THEN
        RETURN format('%s is no longer a table: unregister it (subject_table_unregister)', v_qual);
    END IF;
    FOREACH v_col IN ARRAY v_cols LOOP
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = v_col AND a.attnum > 0
                       AND NOT a.attisdropped) THEN
            RETURN format('its column %I does not exist (renamed or dropped?): register the table again with its'
                          ' current columns (subject_table_register)', v_col);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- A registered table that is gone: its name no longer resolves and no table of its OID holds its
-- columns. Nothing is left to find in it.
CREATE OR REPLACE FUNCTION pgretention._subject_dropped(p_id int)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_regclass(format('%I.%I', st.table_schema, st.table_name)) IS NULL
           AND pgretention._moved_to(st.relid, ARRAY(SELECT c.column_name FROM pgretention.subject_column c
                                                     WHERE c.table_id = st.id)) IS NULL
    FROM pgretention.subject_table st WHERE st.id = p_id
$$;

-- Why retention cannot act on a managed table, or NULL when it can: the table or one of its class
-- partitions was dropped, renamed or moved, its time or class column is gone, it is no longer
-- partitioned, or its subject registration (which every purge's hold check reads) is broken.
CREATE OR REPLACE FUNCTION pgretention._table_problem(p_table_id int)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._table(p_table_id);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_rel regclass := to_regclass(v_qual);
    v_moved regclass;
    v_col name;
    c pgretention.retention_class;
    v_st int;
    v_problem text;
BEGIN
    IF pgretention._reserved_schema(t.table_schema) IS NOT NULL THEN
        RETURN format('table %s is in schema %I, %s, which pgretention may not act on: release it (table_release)',
                      v_qual, t.table_schema, pgretention._reserved_schema(t.table_schema));
    END IF;
    IF v_rel IS NULL THEN
        v_moved := pgretention._moved_to(t.relid, ARRAY[t.time_column]);
        IF v_moved IS NOT NULL THEN
            RETURN format('table %s was renamed or moved and is now %s: retention has stopped; rename it back, or'
                          ' release %s (table_release) and take %s under management', v_qual, v_moved, v_qual, v_moved);
        END IF;
        RETURN format('table %s does not exist (dropped?): release it (table_release)', v_qual);
    END IF;
    IF (SELECT k.relkind FROM pg_class k WHERE k.oid = v_rel) <> 'p' THEN
        RETURN format('table %s is not partitioned (replaced by another table?): retention has stopped; release it'
                      ' (table_release)', v_qual);
    END IF;
    FOREACH v_col IN ARRAY ARRAY[t.time_column, t.class_column] LOOP
        CONTINUE WHEN v_col IS NULL;
        IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attname = v_col AND a.attnum > 0
                       AND NOT a.attisdropped) THEN
            RETURN format('%s column %I of table %s does not exist (renamed or dropped?): retention has stopped',
                          CASE WHEN v_col = t.time_column THEN 'time' ELSE 'class' END, v_col, v_qual);
        END IF;
    END LOOP;
    FOR c IN SELECT * FROM pgretention.retention_class k WHERE k.table_id = t.id
             AND (k.parent_schema, k.parent_name) <> (t.table_schema, t.table_name)
             AND (k.class_name = t.default_class
                  OR EXISTS (SELECT FROM pgretention.class_member m WHERE m.table_id = t.id AND m.routed_class = k.class_name))
             ORDER BY k.class_name LOOP
        IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL THEN
            RETURN format('partition %I.%I of class %s of table %s does not exist (renamed or dropped?): retention of'
                          ' the class has stopped', c.parent_schema, c.parent_name, c.class_name, v_qual);
        END IF;
    END LOOP;
    SELECT s.id INTO v_st FROM pgretention.subject_table s
    WHERE s.table_schema = t.table_schema AND s.table_name = t.table_name;
    v_problem := pgretention._subject_problem(v_st);
    IF v_problem IS NOT NULL THEN
        RETURN format('table %s is registered for subject requests, and %s; legal holds cannot be checked, so'
                      ' nothing is removed from it', v_qual, v_problem);
    END IF;
    RETURN NULL;
END
$$;
