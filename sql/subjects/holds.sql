-- Legal holds: by subject identifier (optionally within a time range) or by managed table / class
-- and time range. Purges, anonymisation and erasure all respect active holds:
--  * a partition due for drop keeps exactly its held rows: they are copied into
--    pgretention.hold_store (in the transaction that drops the detached partition) and the rest goes;
--  * a partition overlapping a table/class hold's time range is not dropped at all;
--  * row-level deletes (default partitions, moved members, erasure) skip held rows.
-- A hold ends when released or at its end date; held rows then follow their normal rules at the
-- next run (rows in the hold store come from expired partitions and are deleted).

CREATE OR REPLACE FUNCTION pgretention.hold_set(
    p_reason text, p_reference text,
    p_subject_kind text DEFAULT NULL, p_subject_value text DEFAULT NULL,
    p_table text DEFAULT NULL, p_class text DEFAULT NULL,
    p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL,
    p_ends_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table;
    v_value text;
    v_id bigint;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' OR p_reference IS NULL OR btrim(p_reference) = '' THEN
        RAISE EXCEPTION 'a legal hold needs a reason and a reference (order number)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (p_subject_kind IS NULL) <> (p_subject_value IS NULL) THEN
        RAISE EXCEPTION 'a subject hold needs both the identifier kind and its value' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_subject_kind IS NULL AND p_table IS NULL THEN
        RAISE EXCEPTION 'a legal hold covers a subject or a managed table (with an optional class and time range)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_from IS NOT NULL AND p_to IS NOT NULL AND p_from >= p_to THEN
        RAISE EXCEPTION 'hold time range is empty: % is not before %', p_from, p_to USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_subject_kind IS NOT NULL THEN
        v_value := pgretention._normalize_identifier(p_subject_kind, p_subject_value);
    END IF;
    IF p_table IS NOT NULL THEN
        t := pgretention._managed(p_table);
        IF p_class IS NOT NULL THEN
            PERFORM pgretention._class(t.id, p_class);
        END IF;
    ELSIF p_class IS NOT NULL THEN
        RAISE EXCEPTION 'a class hold needs its table' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgretention.legal_hold (reason, reference, subject_kind, subject_value, table_id, class_name,
        time_from, time_to, ends_at)
    VALUES (p_reason, p_reference, p_subject_kind, v_value, t.id, p_class, p_from, p_to, p_ends_at)
    RETURNING id INTO v_id;
    PERFORM pgretention._audit('hold.set', CASE WHEN t.id IS NOT NULL THEN format('%I.%I', t.table_schema, t.table_name) END,
        jsonb_build_object('hold', v_id, 'reference', p_reference, 'subject_kind', p_subject_kind,
            'subject_hash', CASE WHEN v_value IS NOT NULL THEN pgretention._identifier_hash(p_subject_kind, v_value) END,
            'class', p_class, 'from', p_from, 'to', p_to, 'ends_at', p_ends_at));
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.hold_release(p_hold bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h pgretention.legal_hold;
BEGIN
    h := pgretention._hold(p_hold, true);
    IF h.released_at IS NOT NULL THEN
        RAISE EXCEPTION 'legal hold % was already released at %', p_hold, h.released_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE pgretention.legal_hold SET released_at = now(), released_by = session_user WHERE id = p_hold;
    PERFORM pgretention._audit('hold.release', NULL, jsonb_build_object('hold', p_hold, 'reference', h.reference));
END
$$;

-- Active holds at p_now.
CREATE OR REPLACE FUNCTION pgretention._active_holds(p_now timestamptz)
RETURNS SETOF pgretention.legal_hold
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM pgretention.legal_hold h
    WHERE h.released_at IS NULL AND (h.ends_at IS NULL OR h.ends_at > p_now) AND h.set_at <= greatest(p_now, now())
$$;

-- A boolean SQL expression over alias t: true for rows of the table under an active hold at p_now
-- ('false' when nothing of the table is held). Subject holds match the table's registered
-- identifier columns; table/class holds match rows of that table (and class) in their time range.
CREATE OR REPLACE FUNCTION pgretention._hold_predicate(
    p_schema name, p_table name, p_now timestamptz, p_subject_only boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    st pgretention.subject_table;
    m pgretention.managed_table;
    v_time text;
    v_type text;
    v_zone text := 'UTC';
    v_parts text[] := '{}';
    h record;
    c record;
    v_range text;
BEGIN
    SELECT * INTO st FROM pgretention.subject_table WHERE table_schema = p_schema AND table_name = p_table;
    SELECT * INTO m FROM pgretention.managed_table WHERE table_schema = p_schema AND table_name = p_table;
    v_time := coalesce(m.time_column, st.time_column);
    v_type := coalesce(m.time_type, 'timestamptz');
    v_zone := coalesce(m.time_zone, 'UTC');
    -- subject holds, grouped by kind and time range
    IF st.id IS NOT NULL THEN
        FOR h IN SELECT subject_kind, time_from, time_to, array_agg(subject_value ORDER BY subject_value) AS vals
                 FROM pgretention._active_holds(p_now) WHERE subject_kind IS NOT NULL
                 GROUP BY subject_kind, time_from, time_to LOOP
            v_range := pgretention._hold_range(v_time, v_type, v_zone, h.time_from, h.time_to);
            FOR c IN SELECT column_name FROM pgretention.subject_column WHERE table_id = st.id AND kind = h.subject_kind LOOP
                -- a registered column renamed or dropped: nothing of this table can be told held, so
                -- nothing of it may go (this table's work fails, by name; the other tables' goes on)
                IF NOT EXISTS (SELECT FROM pg_attribute a
                               WHERE a.attrelid = to_regclass(format('%I.%I', p_schema, p_table))
                                 AND a.attname = c.column_name AND a.attnum > 0 AND NOT a.attisdropped) THEN
                    RAISE EXCEPTION 'column % of %.% (registered for % identifiers) does not exist: rows under a '
                                    'legal hold cannot be told apart; nothing of the table is removed until it is '
                                    'registered again', c.column_name, p_schema, p_table, h.subject_kind
                        USING ERRCODE = 'undefined_column';
                END IF;
                -- index-friendly (col = ANY (...) stays a qual the planner can use) and never NULL
                v_parts := v_parts || format('(t.%I IS NOT NULL AND t.%I::text = ANY (%L::text[])%s)',
                                             c.column_name, c.column_name, h.vals, v_range);
            END LOOP;
        END LOOP;
    END IF;
    -- table / class holds
    IF m.id IS NOT NULL AND NOT p_subject_only THEN
        FOR h IN SELECT * FROM pgretention._active_holds(p_now) x WHERE x.table_id = m.id LOOP
            v_range := pgretention._hold_range(v_time, v_type, v_zone, h.time_from, h.time_to);
            IF h.class_name IS NULL OR m.class_column IS NULL THEN
                v_parts := v_parts || format('(true%s)', v_range);
            ELSIF m.layout = 'time' THEN
                v_parts := v_parts || format('(%s%s)', pgretention._class_cond(m.id, h.class_name), v_range);
            ELSE
                v_parts := v_parts || format('(t.tableoid IN (SELECT i.inhrelid FROM pg_catalog.pg_inherits i'
                    ' WHERE i.inhparent = %L::regclass)%s)',
                    (SELECT format('%I.%I', parent_schema, parent_name) FROM pgretention.retention_class
                     WHERE table_id = m.id AND class_name = h.class_name), v_range);
            END IF;
        END LOOP;
    END IF;
    IF cardinality(v_parts) = 0 THEN
        RETURN 'false';
    END IF;
    -- never NULL (callers write NOT (predicate)): each part is true or false for every row
    RETURN '(' || array_to_string(v_parts, ' OR ') || ')';
END
$$;

CREATE OR REPLACE FUNCTION pgretention._hold_range(p_time text, p_type text, p_zone text, p_from timestamptz, p_to timestamptz)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_time IS NULL OR (p_from IS NULL AND p_to IS NULL) THEN '' ELSE
        format(' AND coalesce(%s, false)', concat_ws(' AND ',
            CASE WHEN p_from IS NOT NULL THEN format('t.%I >= %s', p_time, pgretention._typed_literal(p_from, p_type, p_zone)) END,
            CASE WHEN p_to IS NOT NULL THEN format('t.%I < %s', p_time, pgretention._typed_literal(p_to, p_type, p_zone)) END))
    END
$$;

-- Is a whole partition of a class protected by a table/class hold overlapping its range?
CREATE OR REPLACE FUNCTION pgretention._leaf_held(
    p_table_id int, p_class text, p_lower timestamptz, p_upper timestamptz, p_now timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM pgretention._active_holds(p_now) h
        WHERE h.table_id = p_table_id AND (h.class_name IS NULL OR h.class_name = p_class)
          AND (h.time_from IS NULL OR p_upper IS NULL OR h.time_from < p_upper)
          AND (h.time_to IS NULL OR p_lower IS NULL OR h.time_to > p_lower))
$$;

-- Copy the held rows of a detached partition into the hold store. Returns rows kept. (Whole
-- partitions under a table/class hold are never detached, so only subject holds apply here.)
CREATE OR REPLACE FUNCTION pgretention._keep_held_rows(p_table_id int, p_detached regclass, p_partition name, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    m pgretention.managed_table;
    v_pred text;
    v_cols text;
    v_rows jsonb;
    v_n bigint;
BEGIN
    m := pgretention._table(p_table_id);
    v_pred := pgretention._hold_predicate(m.table_schema, m.table_name, p_now, true);
    IF v_pred = 'false' THEN
        RETURN 0;
    END IF;
    SELECT string_agg(format('t.%I::text', sc.column_name), ', ') INTO v_cols
    FROM pgretention.subject_column sc JOIN pgretention.subject_table st ON st.id = sc.table_id
    WHERE st.table_schema = m.table_schema AND st.table_name = m.table_name;
    -- the rows are read with the owner's rights (casts of its types may be its code), then stored
    -- by pgretention; the detached partition is the owner's to read
    PERFORM pgretention._give_to_owner(p_detached,
                                       pgretention._rel_owner(format('%I.%I', m.table_schema, m.table_name)::regclass));
    v_rows := pgretention._as_owner_value(format('%I.%I', m.table_schema, m.table_name)::regclass, format(
        'SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(''row'', pg_catalog.to_jsonb(t),'
        ' ''time'', t.%I::text, ''ids'', ARRAY[%s])) FROM %s',
        m.time_column, v_cols,
        -- Citus: the held rows come to the coordinator first
        CASE WHEN pgretention._is_distributed(p_detached)
             THEN format('(SELECT * FROM %s t WHERE %s OFFSET 0) t', p_detached, v_pred)
             ELSE format('%s t WHERE %s', p_detached, v_pred) END));
    INSERT INTO pgretention.hold_store (table_schema, table_name, partition, row_time, row_data, hold_ids)
    SELECT m.table_schema, m.table_name, p_partition, pgretention._to_abs(e.value ->> 'time', m.time_type, m.time_zone),
           e.value -> 'row',
           ARRAY(SELECT h.id FROM pgretention._active_holds(p_now) h
                 WHERE h.subject_value IN (SELECT jsonb_array_elements_text(e.value -> 'ids')))
    FROM jsonb_array_elements(coalesce(v_rows, '[]')) e;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

-- Rows in the hold store that no active hold covers any more go at the next run (they come from
-- expired partitions). p_now is the run's reference time (run.sql's _run_step; granted to no one).
-- A table whose holds cannot be evaluated (a registered column renamed) keeps its rows and is
-- reported (in the run p_run_id, else as a warning); the others go on. Returns rows deleted.
CREATE OR REPLACE FUNCTION pgretention._purge_released_holds(p_now timestamptz, p_run_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    r record;
    v_n bigint;
    v_total bigint := 0;
BEGIN
    IF p_now IS NULL OR NOT isfinite(p_now) THEN
        RAISE EXCEPTION 'the hold store is purged at a point in time, not %', coalesce(p_now::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN SELECT DISTINCT table_schema, table_name FROM pgretention.hold_store LOOP
        CONTINUE WHEN to_regclass(format('%I.%I', r.table_schema, r.table_name)) IS NULL;
        BEGIN
            EXECUTE format('DELETE FROM pgretention.hold_store s WHERE s.table_schema = %L AND s.table_name = %L'
                           ' AND NOT EXISTS (SELECT FROM jsonb_populate_record(NULL::%I.%I, s.row_data) t WHERE %s)',
                           r.table_schema, r.table_name, r.table_schema, r.table_name,
                           pgretention._hold_predicate(r.table_schema, r.table_name, p_now, true));
            GET DIAGNOSTICS v_n = ROW_COUNT;
        EXCEPTION WHEN OTHERS THEN
            v_n := 0;
            IF p_run_id IS NOT NULL THEN
                PERFORM pgretention._job_error(p_run_id, jsonb_build_object(
                    'table', format('%I.%I', r.table_schema, r.table_name), 'step', 'hold store', 'error', SQLERRM));
            ELSE
                RAISE WARNING 'pgretention: hold store rows of %.% kept: %', r.table_schema, r.table_name, SQLERRM;
            END IF;
        END;
        v_total := v_total + v_n;
    END LOOP;
    IF v_total > 0 THEN
        PERFORM pgretention._audit('hold.store_purge', NULL, jsonb_build_object('rows', v_total));
    END IF;
    RETURN v_total;
END
$$;

-- The report's check of holds: a hold past its end date that nobody released keeps data past
-- its period.
CREATE OR REPLACE FUNCTION pgretention.report_check_holds(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT 'legal_holds'::text, 'violation'::text, 'hold ' || h.id, 'past_end'::text,
           format('legal hold %s (%s) ended %s but is not released: data is kept past its period',
                  h.id, h.reference, h.ends_at), h.id
    FROM pgretention.report_holds(p_now) h WHERE h.past_end;
END
$$;
