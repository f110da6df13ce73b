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
