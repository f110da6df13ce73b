-- What the partition engine would do and how it stands: plan (changes nothing), status per table
-- and class, and the report's check of both.

-- plan: what a run at p_now would remove, changing nothing. A table retention cannot act on
-- (_table_problem: dropped, renamed, a column gone) has one row per class with action
-- 'skipped: <why>' and nothing else; the other tables are planned as usual.
CREATE OR REPLACE FUNCTION pgretention.plan(p_now timestamptz DEFAULT NULL, p_table text DEFAULT NULL)
RETURNS TABLE (table_name text, class_name text, partition text, range_from text, range_to text,
               action text, rows_estimate bigint, bytes bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    r record;
    l record;
    v_default regclass;
    v_n bigint;
    v_problem text;
BEGIN
    FOR r IN SELECT * FROM pgretention._run_targets(p_table) LOOP
        -- a broken table (dropped, renamed, a column renamed) is reported, and the others go on
        v_problem := pgretention._table_problem(r.table_id);
        IF v_problem IS NOT NULL THEN
            table_name := r.table_name; class_name := r.class_name; partition := NULL; range_from := NULL;
            range_to := NULL; action := 'skipped: ' || v_problem; rows_estimate := NULL; bytes := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        FOR l IN SELECT * FROM pgretention._expired_leaves(r.table_id, r.class_name, v_now) LOOP
            table_name := r.table_name; class_name := r.class_name;
            partition := format('%I.%I', l.leaf_schema, l.leaf_name);
            range_from := l.range_from; range_to := l.range_to;
            action := (SELECT CASE WHEN m.on_expiry = 'archive' THEN 'detach and archive' ELSE 'detach and drop' END
                       FROM pgretention.managed_table m WHERE m.id = r.table_id);
            rows_estimate := l.rows_estimate; bytes := l.bytes;
            RETURN NEXT;
        END LOOP;
        -- time-first layout: this class's rows in shared partitions past its period
        FOR l IN SELECT * FROM pgretention._class_purge_due(r.table_id, r.class_name, v_now) LOOP
            table_name := r.table_name; class_name := r.class_name; partition := l.leaf::text;
            range_from := l.range_from; range_to := l.range_to; action := 'delete the class''s rows';
            rows_estimate := NULL; bytes := NULL;
            RETURN NEXT;
        END LOOP;
        SELECT x.leaf INTO v_default FROM pgretention._leaves(r.table_id, r.class_name) x WHERE x.is_default;
        IF v_default IS NOT NULL THEN
            EXECUTE format('SELECT count(*) FROM %s t WHERE (%s) AND NOT %s', v_default,
                           pgretention._default_expired_cond(r.table_id, r.class_name, v_now),
                           (SELECT pgretention._hold_predicate(m.table_schema, m.table_name, v_now)
                            FROM pgretention.managed_table m WHERE m.id = r.table_id)) INTO v_n;
            IF v_n > 0 THEN
                table_name := r.table_name; class_name := r.class_name; partition := v_default::text;
                range_from := NULL; range_to := NULL; action := 'delete expired rows in batches';
                rows_estimate := v_n; bytes := NULL;
                RETURN NEXT;
            END IF;
        END IF;
    END LOOP;
    FOR r IN SELECT o.*, format('%I.%I', m.table_schema, m.table_name) AS t FROM pgretention.partition_op o
             JOIN pgretention.managed_table m ON m.id = o.table_id WHERE o.state = 'detached' LOOP
        table_name := r.t; class_name := r.class_name; partition := format('%I.%I', r.partition_schema, r.partition_name);
        range_from := r.range_from; range_to := r.range_to; action := 'finish pending ' || r.op;
        rows_estimate := r.rows_estimate; bytes := r.bytes;
        RETURN NEXT;
    END LOOP;
END
$$;

-- status() gained table_id and then problem (its last columns). CREATE OR REPLACE cannot change a
-- function's columns, so a status() without them (an earlier release) is dropped first.
DO $$
BEGIN
    IF 'problem' <> ALL (coalesce((SELECT p.proargnames FROM pg_catalog.pg_proc p
                                   WHERE p.oid = pg_catalog.to_regprocedure('pgretention.status(timestamptz)')),
                                  ARRAY['problem'])) THEN
        DROP FUNCTION pgretention.status(timestamptz);
    END IF;
END
$$;

-- status: per managed table and class, what is kept and how it stands against its promise.
-- worst_case_overshoot: a row can live up to one partition interval past drop_after (whole
-- partitions are dropped) plus the longest gap between two scheduled runs. table_id lets the
-- report join the catalog. problem (last): why retention cannot act on the table (dropped,
-- renamed, a column gone: _table_problem), NULL when it can; the facts of such a table are NULL.
CREATE OR REPLACE FUNCTION pgretention.status(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (table_name text, class_name text, drop_after interval, anonymise_after interval,
               partition_interval interval, worst_case_overshoot interval, members int,
               partitions int, total_bytes bigint, oldest_row timestamptz, oldest_row_age interval,
               expired_partitions int, default_rows bigint, expired_default_rows bigint, null_time_rows bigint,
               pending_ops int, last_run timestamptz, last_run_status text, last_run_message text,
               table_id int, problem text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    t pgretention.managed_table;
    c pgretention.retention_class;
    r record;
    l record;
    v_min text;
    v_filter text;
    v_default regclass;
    v_run pgretention.job_run;
BEGIN
    SELECT * INTO v_run FROM pgretention.job_run
    WHERE status <> 'skipped' AND coalesce(summary ->> 'engine', 'partition') = 'partition' ORDER BY id DESC LIMIT 1;
    FOR r IN SELECT m.id, k.class_name FROM pgretention.managed_table m
             JOIN pgretention.retention_class k ON k.table_id = m.id
             ORDER BY m.table_schema, m.table_name, k.class_name LOOP
        t := pgretention._table(r.id);
        c := pgretention._class(r.id, r.class_name);
        table_name := format('%I.%I', t.table_schema, t.table_name);
        class_name := c.class_name;
        drop_after := c.drop_after;
        anonymise_after := c.anonymise_after;
        partition_interval := t.partition_interval;
        worst_case_overshoot := t.partition_interval + pgretention._setting_value('schedule_max_gap')::interval;
        members := (SELECT count(*) FROM pgretention.class_member m WHERE m.table_id = t.id AND m.class_name = c.class_name);
        last_run := v_run.started_at;
        last_run_status := v_run.status;
        last_run_message := v_run.message;
        table_id := t.id;
        problem := pgretention._table_problem(t.id);
        IF problem IS NOT NULL THEN
            partitions := NULL; total_bytes := NULL; oldest_row := NULL; oldest_row_age := NULL;
            expired_partitions := NULL; default_rows := NULL; expired_default_rows := NULL; null_time_rows := NULL;
            pending_ops := (SELECT count(*) FROM pgretention.partition_op o WHERE o.table_id = t.id
                            AND o.class_name = c.class_name AND o.state = 'detached');
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT count(*) FILTER (WHERE NOT x.is_default), coalesce(sum(pg_total_relation_size(x.leaf)), 0),
               count(*) FILTER (WHERE NOT x.is_default AND x.upper_abs <= v_now - pgretention._leaf_drop_after(t.id, c.class_name))
          INTO partitions, total_bytes, expired_partitions
          FROM pgretention._leaves(t.id, c.class_name) x;
        -- oldest row: the first non-empty partition in time order, and the default partition
        oldest_row := NULL;
        v_filter := pgretention._class_filter(t.id, c.class_name);
        FOR l IN SELECT * FROM pgretention._leaves(t.id, c.class_name) x WHERE NOT x.is_default
                 AND NOT EXISTS (SELECT FROM pgretention.class_purge p WHERE p.table_id = t.id  -- time-first layout
                                 AND p.class_name = c.class_name AND p.range_from = x.range_from AND p.done)
                 ORDER BY x.lower_abs LOOP
            EXECUTE format('SELECT min(%I)::text FROM %s t WHERE %s', t.time_column, l.leaf, v_filter) INTO v_min;
            IF v_min IS NOT NULL THEN
                oldest_row := pgretention._to_abs(v_min, t.time_type, t.time_zone);
                EXIT;
            END IF;
        END LOOP;
        SELECT x.leaf INTO v_default FROM pgretention._leaves(t.id, c.class_name) x WHERE x.is_default;
        default_rows := 0; expired_default_rows := 0; null_time_rows := 0;
        IF v_default IS NOT NULL THEN
            -- expired rows under a legal hold are lawfully kept: not counted as expired
            EXECUTE format('SELECT count(*), count(*) FILTER (WHERE (%s) AND NOT %s), count(*) FILTER (WHERE %I IS NULL),'
                           ' min(%I)::text FROM %s t WHERE %s',
                           pgretention._default_expired_cond(t.id, c.class_name, v_now),
                           pgretention._hold_predicate(t.table_schema, t.table_name, v_now), t.time_column,
                           t.time_column, v_default, v_filter)
                INTO default_rows, expired_default_rows, null_time_rows, v_min;
            IF v_min IS NOT NULL THEN
                oldest_row := least(oldest_row, pgretention._to_abs(v_min, t.time_type, t.time_zone));
            END IF;
        END IF;
        oldest_row_age := v_now - oldest_row;
        pending_ops := (SELECT count(*) FROM pgretention.partition_op o WHERE o.table_id = t.id
                        AND o.class_name = c.class_name AND o.state = 'detached');
        RETURN NEXT;
    END LOOP;
END
$$;

-- Checks ------------------------------------------------------------------------------------
-- severity: 'violation' (a promise is broken or about to be) or 'warning' (needs attention).

CREATE OR REPLACE FUNCTION pgretention.report_check_tables(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    -- tables retention cannot act on: a violation each (the rows they hold are kept past their period)
    FOR r IN SELECT m.id, format('%I.%I', m.table_schema, m.table_name) AS t FROM pgretention.managed_table m
             ORDER BY m.table_schema, m.table_name LOOP
        message := pgretention._table_problem(r.id);
        CONTINUE WHEN message IS NULL;
        section := 'tables'; severity := 'violation'; object := r.t; check_name := 'table_broken'; value := NULL;
        RETURN NEXT;
    END LOOP;
    FOR r IN SELECT * FROM pgretention.report_tables(p_now) LOOP
        section := 'tables';
        object := r.table_name || ':' || r.class_name;
        IF r.rows_past_overshoot > 0 THEN
            severity := 'violation'; check_name := 'rows_past_period'; value := r.rows_past_overshoot;
            message := format('%s rows are older than %s + the worst-case overshoot of %s',
                              r.rows_past_overshoot, r.drop_after, r.worst_case_overshoot);
            RETURN NEXT;
        END IF;
        IF r.expired_default_rows > 0 THEN
            severity := 'violation'; check_name := 'expired_default_rows'; value := r.expired_default_rows;
            message := format('%s expired rows sit in the default partition', r.expired_default_rows);
            RETURN NEXT;
        END IF;
        IF r.default_rows - r.expired_default_rows - r.null_time_rows > 0 THEN
            severity := 'warning'; check_name := 'default_rows';
            value := r.default_rows - r.expired_default_rows - r.null_time_rows;
            message := format('%s rows in the default partition (timestamps outside the partitions)', value);
            RETURN NEXT;
        END IF;
        IF r.null_time_rows > 0 THEN
            severity := 'warning'; check_name := 'null_time_rows'; value := r.null_time_rows;
            message := format('%s rows have no timestamp and therefore no age', r.null_time_rows);
            RETURN NEXT;
        END IF;
        IF r.pending_ops > 0 THEN
            severity := 'warning'; check_name := 'pending_ops'; value := r.pending_ops;
            message := format('%s detached partitions wait to be dropped', r.pending_ops);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
