-- A subject's rows: the condition that finds them in a registered table, every row about a subject
-- (export), and erasure (delete, or anonymise for statutory records) sparing rows under legal hold.

-- WHERE condition (over alias t) for the rows of a registered table about the given subject.
-- p_stored: the condition over a row kept in the hold store (h.row_data), compared as text the
-- same way, without reading it back into the owner's row type (whose input functions are its code).
CREATE OR REPLACE FUNCTION pgretention._subject_condition(p_table_id int, p_identifiers jsonb, p_tenant text,
                                                         p_stored boolean DEFAULT false)
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
            v_parts := v_parts || format(CASE WHEN p_stored THEN '(h.row_data ->> %L) = ANY (%L::text[])'
                                              ELSE 't.%I::text = ANY (%L::text[])' END, c.column_name,
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
        v_cond := v_cond || format(CASE WHEN p_stored THEN ' AND (h.row_data ->> %L) = %L' ELSE ' AND t.%I::text = %L' END,
                                   st.tenant_column, p_tenant);
    END IF;
    RETURN v_cond;
END
$$;

-- Every row about a subject in every registered table and partition, plus rows kept in the hold
-- store from dropped partitions, by identifiers: internal (the owner's; request_export and
-- request_fulfil read through it). Roles read a subject's rows through a request:
-- subject_rows(request), below.
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
    FOR st IN SELECT * FROM pgretention._subject_tables() LOOP  -- dropped tables left out; broken ones raise
        v_cond := pgretention._subject_condition(st.id, v_ids, p_tenant);
        CONTINUE WHEN v_cond IS NULL;
        -- the owner's rows, read with the owner's rights
        RETURN QUERY SELECT format('%I.%I', st.table_schema, st.table_name), r.r
                     FROM pgretention._as_owner_rows(format('%I.%I', st.table_schema, st.table_name)::regclass,
                              format('SELECT * FROM %I.%I t WHERE %s', st.table_schema, st.table_name, v_cond)) r(r);
        RETURN QUERY EXECUTE format('SELECT %L::text, h.row_data FROM pgretention.hold_store h'
            ' WHERE h.table_schema = %L AND h.table_name = %L AND %s',
            'held:' || format('%I.%I', st.table_schema, st.table_name),
            st.table_schema, st.table_name, pgretention._subject_condition(st.id, v_ids, p_tenant, true));
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
    v_rel regclass;
    c record;
BEGIN
    PERFORM pgretention._set_lock_timeout();
    FOR st IN SELECT * FROM pgretention._subject_tables() LOOP  -- dropped tables left out; broken ones raise
        v_cond := pgretention._subject_condition(st.id, p_identifiers, p_tenant);
        CONTINUE WHEN v_cond IS NULL;
        v_hold := pgretention._hold_predicate(st.table_schema, st.table_name, p_now);
        -- the owner's rows, with the owner's rights: its triggers, policies and casts run as the owner
        v_rel := format('%I.%I', st.table_schema, st.table_name)::regclass;
        v_held := pgretention._as_owner_value(v_rel, format('SELECT pg_catalog.to_jsonb(count(*)) FROM %I.%I t WHERE (%s) AND (%s)',
                                                            st.table_schema, st.table_name, v_cond, v_hold))::bigint;
        IF st.erasure = 'delete' THEN
            v_n := pgretention._as_owner(v_rel, format('DELETE FROM %I.%I t WHERE (%s) AND NOT (%s)',
                                                       st.table_schema, st.table_name, v_cond, v_hold));
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
            v_n := pgretention._as_owner(v_rel, format('UPDATE %I.%I t SET %s WHERE (%s) AND NOT (%s)',
                                                       st.table_schema, st.table_name, v_set, v_cond, v_hold));
        END IF;
        v_out := v_out || jsonb_build_object(format('%I.%I', st.table_schema, st.table_name),
            jsonb_build_object(CASE WHEN st.erasure = 'delete' THEN 'deleted' ELSE 'anonymised' END, v_n, 'held', v_held));
    END LOOP;
    RETURN v_out;
END
$$;

-- Every row about the subject of a request (open: it still holds its identifiers), as above;
-- streamed by the CLI's export. Reading personal data needs a recorded request, and every read is
-- audited (request.read: the request and how many rows, no personal data).
CREATE OR REPLACE FUNCTION pgretention.subject_rows(p_request bigint)
RETURNS TABLE (table_name text, row_data jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.subject_request;
    v_n bigint;
BEGIN
    r := pgretention._request(p_request);
    IF r.identifiers IS NULL THEN
        RAISE EXCEPTION 'request % is % and no longer holds its identifiers', p_request, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN QUERY SELECT s.table_name, s.row_data FROM pgretention.subject_rows(r.identifiers, r.tenant) s;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    PERFORM pgretention._audit('request.read', NULL, jsonb_build_object('request', r.id, 'kind', r.kind,
        'rows_read', v_n, 'identifier_hashes', r.identifier_hashes));
END
$$;
