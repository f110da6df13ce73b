-- The scheduled entry point: CALL pgretention.run(). One run drives every engine, in this order:
--   1. work an earlier run or a crash left half-done (detached partitions not yet dropped);
--   2. per managed table and class, the partition engine's steps (partition/), each one unit of work
--      in its own transaction:
--        premake        partitions ahead of now (pg_partman)
--        detach         each expired partition, then drop (or archive) it
--        default        expired rows in the class's default partition, in batches
--        class purge    time-first layout: the class's rows in shared partitions past its period
--        historical     adopted tables: expired rows of the historical partition (adopt/)
--        moved members  members moved to a shorter class (once per table)
--   3. rows in the hold store whose holds ended, proofs of requests past 5 years (subjects/), the
--      audit log's own retention (audit/);
--   4. partitions past anonymise_after, rewritten anonymised (CALL anon_run, anonymiser/);
--   5. row-level rules of entity tables (CALL entity_run, entity/), unless one table was asked for.
-- Step 2 is one loop: _run_items lists the work of a step, _run_step does one unit of it. A unit
-- that needs a lock returns NULL when it was not granted (core/batches.sql): the loop backs off and
-- retries (lock_retries, retry_backoff_max, max_lock_wait_total) and then leaves it for the next
-- run (the run is 'partial'); a batch step repeats while it deletes full batches; an error is
-- recorded and the run goes on (the run is 'failed').
--
-- run is a procedure, because it commits after every unit so that one failure or lock wait never
-- holds back the rest; therefore SECURITY INVOKER without SET clauses (PostgreSQL forbids
-- transaction control otherwise). Every name in it is schema-qualified and all privileged work
-- happens in SECURITY DEFINER functions with a fixed search_path.

-- (table, class) pairs a run works on.
CREATE OR REPLACE FUNCTION pgretention._run_targets(p_table text)
RETURNS TABLE (table_id int, table_name text, class_name text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_only int;
BEGIN
    IF p_table IS NOT NULL THEN
        v_only := (pgretention._managed(p_table)).id;
    END IF;
    RETURN QUERY
    SELECT m.id, format('%I.%I', m.table_schema, m.table_name), c.class_name
    FROM pgretention.managed_table m JOIN pgretention.retention_class c ON c.table_id = m.id
    WHERE v_only IS NULL OR m.id = v_only
    ORDER BY m.id, c.class_name;
END
$$;

-- The steps of a run, in order: finishing pending operations once, then every step for each
-- (table, class) pair.
CREATE OR REPLACE FUNCTION pgretention._run_steps(p_table text)
RETURNS TABLE (step text, table_id int, table_name text, class_name text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT x.step, x.table_id, x.table_name, x.class_name
    FROM (SELECT 'finish' AS step, NULL::int AS table_id, NULL::text AS table_name, NULL::text AS class_name,
                 0::bigint AS n, 0::bigint AS k
          UNION ALL
          SELECT s.step, t.table_id, t.table_name, t.class_name, t.n, s.k
          FROM pgretention._run_targets(p_table) WITH ORDINALITY AS t(table_id, table_name, class_name, n)
          CROSS JOIN unnest(ARRAY['premake', 'detach', 'default', 'class purge', 'historical', 'moved members'])
                     WITH ORDINALITY AS s(step, k)) x
    ORDER BY x.n, x.k
$$;

-- The work of one step for a (table, class) pair at p_now: the partitions (or the one unit) it
-- acts on. label names the object in messages; batched: the step repeats while it deletes full
-- batches.
CREATE OR REPLACE FUNCTION pgretention._run_items(p_step text, p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (op bigint, leaf regclass, leaf_name name, range_from text, range_to text, label text, batched boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
BEGIN
    IF p_step = 'finish' THEN
        RETURN QUERY SELECT o.id, NULL::regclass, o.partition_name, o.range_from, o.range_to,
                            format('%I.%I', o.partition_schema, o.partition_name), false
                     FROM pgretention.partition_op o WHERE o.state = 'detached' ORDER BY o.id;
        RETURN;
    END IF;
    t := pgretention._table(p_table_id);
    CASE p_step
    WHEN 'premake' THEN
        RETURN QUERY SELECT NULL::bigint, NULL::regclass, NULL::name, NULL::text, NULL::text,
                            (SELECT format('%I.%I', c.parent_schema, c.parent_name) FROM pgretention.retention_class c
                             WHERE c.table_id = p_table_id AND c.class_name = p_class), false;
    WHEN 'detach' THEN
        RETURN QUERY SELECT NULL::bigint, e.leaf, e.leaf_name, e.range_from, e.range_to, e.leaf::text, false
                     FROM pgretention._expired_leaves(p_table_id, p_class, p_now) e;
    WHEN 'default' THEN
        RETURN QUERY SELECT NULL::bigint, l.leaf, l.leaf_name, NULL::text, NULL::text, l.leaf::text, true
                     FROM pgretention._leaves(p_table_id, p_class) l WHERE l.is_default;
    WHEN 'class purge' THEN
        RETURN QUERY SELECT NULL::bigint, d.leaf, d.leaf_name, d.range_from, d.range_to, d.leaf::text, true
                     FROM pgretention._class_purge_due(p_table_id, p_class, p_now) d;
    WHEN 'historical' THEN
        RETURN QUERY SELECT NULL::bigint, NULL::regclass, NULL::name, NULL::text, NULL::text,
                            format('%I.%I', t.table_schema, t.table_name), true;
    WHEN 'moved members' THEN
        -- once per table: with its first class
        RETURN QUERY SELECT NULL::bigint, NULL::regclass, NULL::name, NULL::text, NULL::text,
                            format('%I.%I', t.table_schema, t.table_name), true
                     WHERE p_class = (SELECT min(c.class_name) FROM pgretention.retention_class c
                                      WHERE c.table_id = p_table_id);
    END CASE;
END
$$;

-- One unit of a step, in the caller's transaction: its result (partitions premade, the id of the
-- detach operation (0: gone meanwhile), 1 for a finished operation, rows deleted by a batch), or
-- NULL when its lock was not granted.
CREATE OR REPLACE FUNCTION pgretention._run_step(
    p_step text, p_table_id int, p_class text, p_leaf regclass, p_op bigint, p_now timestamptz,
    p_batch int, p_run_id bigint, p_attempt int)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE p_step
        WHEN 'finish' THEN CASE WHEN pgretention._finish_op(p_op) THEN 1 END
        WHEN 'premake' THEN pgretention._premake(p_table_id, p_class, p_now)
        WHEN 'detach' THEN pgretention._detach_leaf(p_table_id, p_class, p_leaf, p_run_id, p_attempt)
        WHEN 'drop' THEN CASE WHEN pgretention._finish_op(p_op) THEN 1 END
        WHEN 'default' THEN pgretention._purge_default_batch(p_table_id, p_class, p_now, p_batch)
        WHEN 'class purge' THEN pgretention._purge_class_leaf(p_table_id, p_class, p_leaf, p_now, p_batch)
        WHEN 'historical' THEN pgretention._adopt_purge_batch(p_table_id, p_class, p_now, p_batch)
        WHEN 'moved members' THEN pgretention._purge_moved_batch(p_table_id, p_now, p_batch)
    END;
END
$$;

CREATE OR REPLACE PROCEDURE pgretention.run(
    p_now timestamptz DEFAULT NULL,
    p_table text DEFAULT NULL,
    p_runner text DEFAULT 'sql')
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, pg_catalog.now());
    v_run bigint;
    v_cfg record;
    v_st record;
    v_item record;
    v_key text;
    v_todo text;
    v_next text;
    v_op bigint;
    v_n bigint;
    v_err text;
    v_attempt int;
    v_sleep float8;
    v_started timestamptz;
    v_errors jsonb := '[]';
    v_tables jsonb := '{}';
    v_dropped int := 0;
    v_deferred int := 0;
    v_rows bigint := 0;
    v_status text;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE NOTICE 'pgretention: this server is a standby; nothing to do (run on the primary)';
        RETURN;
    END IF;
    IF p_table IS NOT NULL THEN
        PERFORM pgretention._managed(p_table);
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgretention.run')) THEN
        RAISE NOTICE 'pgretention: another run is active in this database; nothing to do';
        RETURN;
    END IF;
    v_run := pgretention._job_begin(p_runner, v_now, pg_catalog.jsonb_build_object('table', p_table), true);
    v_cfg := pgretention._job_settings();
    COMMIT;

    -- 1. and 2.: interrupted DETACH ... CONCURRENTLY first, then the steps (see the top of this file)
    PERFORM pgretention._finalize_pending_detach();
    COMMIT;
    FOR v_st IN SELECT * FROM pgretention._run_steps(p_table) LOOP
        v_key := v_st.table_name || ':' || v_st.class_name;
        IF v_key IS NOT NULL AND NOT v_tables ? v_key THEN
            v_tables := v_tables || pg_catalog.jsonb_build_object(v_key, pg_catalog.jsonb_build_object(
                'partitions_dropped', 0, 'partitions_deferred', 0, 'rows_deleted', 0, 'premade', 0));
        END IF;
        FOR v_item IN SELECT * FROM pgretention._run_items(v_st.step, v_st.table_id, v_st.class_name, v_now) LOOP
            v_todo := v_st.step;
            v_op := v_item.op;
            WHILE v_todo IS NOT NULL LOOP
                -- one unit, retried while its lock is not granted
                v_attempt := 0;
                v_sleep := 0.01;
                v_started := pg_catalog.clock_timestamp();
                LOOP
                    v_attempt := v_attempt + 1;
                    v_err := NULL;
                    BEGIN
                        v_n := pgretention._run_step(v_todo, v_st.table_id, v_st.class_name, v_item.leaf, v_op, v_now,
                                                     v_cfg.batch, v_run, v_attempt);
                    EXCEPTION WHEN OTHERS THEN
                        v_err := SQLERRM;
                    END;
                    COMMIT;
                    EXIT WHEN v_err IS NOT NULL OR v_n IS NOT NULL;
                    EXIT WHEN v_attempt >= v_cfg.retries
                        OR extract(epoch FROM pg_catalog.clock_timestamp() - v_started) >= v_cfg.max_wait;
                    PERFORM pg_catalog.pg_sleep(v_sleep);
                    v_sleep := least(v_sleep * 2, v_cfg.backoff_max);
                END LOOP;
                -- what came of it
                v_next := NULL;
                IF v_err IS NOT NULL THEN
                    v_n := NULL;
                    v_errors := v_errors || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'table', CASE WHEN v_todo = 'moved members' THEN v_st.table_name ELSE v_key END,
                        'op', CASE WHEN v_todo = 'finish' THEN v_op END,
                        'partition', v_item.leaf_name, 'step', v_todo, 'error', v_err));
                ELSIF v_n IS NULL AND v_todo <> 'drop' THEN
                    v_deferred := v_deferred + 1;
                    IF v_key IS NOT NULL THEN
                        v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'partitions_deferred'],
                            pg_catalog.to_jsonb((v_tables -> v_key ->> 'partitions_deferred')::int + 1));
                    END IF;
                    RAISE NOTICE 'pgretention: % busy after % lock attempts; left for the next run', v_item.label, v_attempt;
                END IF;
                CASE v_todo
                WHEN 'finish' THEN
                    IF v_n IS NOT NULL THEN
                        v_dropped := v_dropped + 1;
                        RAISE NOTICE 'pgretention: finished pending operation %', v_op;
                    END IF;
                WHEN 'premake' THEN
                    v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'premade'],
                        pg_catalog.to_jsonb(coalesce(v_n, 0)));
                WHEN 'detach' THEN
                    IF v_n > 0 THEN  -- out of the live table: drop it
                        v_op := v_n;
                        v_next := 'drop';
                    END IF;
                WHEN 'drop' THEN  -- not dropped (busy, failed): finished by the next run
                    v_dropped := v_dropped + 1;
                    v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'partitions_dropped'],
                        pg_catalog.to_jsonb((v_tables -> v_key ->> 'partitions_dropped')::int + 1));
                    RAISE NOTICE 'pgretention: dropped partition % of % (% to %, % rows)%', v_item.leaf_name, v_key,
                        v_item.range_from, v_item.range_to,
                        (SELECT o.rows_estimate FROM pgretention.partition_op o WHERE o.id = v_op),
                        CASE WHEN v_n IS NOT NULL THEN '' ELSE ' (detached; file removal pending)' END;
                ELSE  -- batches of rows
                    v_rows := v_rows + coalesce(v_n, 0);
                    IF v_todo <> 'moved members' THEN
                        v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'rows_deleted'],
                            pg_catalog.to_jsonb((v_tables -> v_key ->> 'rows_deleted')::bigint + coalesce(v_n, 0)));
                    END IF;
                    IF v_n > 0 AND v_todo = 'default' THEN
                        RAISE NOTICE 'pgretention: deleted % expired rows from the default partition of %', v_n, v_key;
                    ELSIF v_n > 0 AND v_todo = 'historical' THEN
                        RAISE NOTICE 'pgretention: deleted % expired rows from the historical partition of %', v_n, v_key;
                    ELSIF v_n > 0 AND v_todo = 'moved members' THEN
                        RAISE NOTICE 'pgretention: deleted % rows of members moved to a shorter class in %', v_n,
                            v_st.table_name;
                    END IF;
                    IF v_item.batched AND v_n >= v_cfg.batch THEN
                        v_next := v_todo;  -- a full batch: there may be more
                    END IF;
                END CASE;
                v_todo := v_next;
            END LOOP;
        END LOOP;
    END LOOP;

    -- 3. rows kept in the hold store whose holds ended; proofs of fulfilled requests past 5 years
    BEGIN
        v_rows := v_rows + pgretention._purge_released_holds(v_now);
        PERFORM pgretention._purge_request_proofs(v_now);
    EXCEPTION WHEN OTHERS THEN
        v_errors := v_errors || pg_catalog.jsonb_build_object('step', 'holds', 'error', SQLERRM);
    END;
    COMMIT;
    -- the audit log's own retention (5 years, with a checkpoint keeping the chain verifiable);
    -- measured against the real clock, never a simulated reference time
    BEGIN
        PERFORM pgretention.audit_retention(pg_catalog.now());
    EXCEPTION WHEN OTHERS THEN
        v_errors := v_errors || pg_catalog.jsonb_build_object('step', 'audit retention', 'error', SQLERRM);
    END;
    COMMIT;

    -- 4. partitions past anonymise_after are rewritten anonymised (anonymiser/)
    CALL pgretention.anon_run(v_now, p_table);

    -- 5. row-level rules of entity tables (entity/), unless one table was asked for
    IF p_table IS NULL AND EXISTS (SELECT FROM pgretention.entity_rule) THEN
        CALL pgretention.entity_run(v_now, NULL, p_runner);
    END IF;

    v_status := CASE WHEN pg_catalog.jsonb_array_length(v_errors) > 0 THEN 'failed'
                     WHEN v_deferred > 0 THEN 'partial' ELSE 'ok' END;
    PERFORM pgretention._job_end(v_run, pg_catalog.jsonb_build_object(
        'tables', v_tables, 'errors', v_errors,
        'totals', pg_catalog.jsonb_build_object('partitions_dropped', v_dropped, 'partitions_deferred', v_deferred,
                                                'rows_deleted', v_rows)),
        v_status, CASE WHEN v_status = 'failed' THEN v_errors -> 0 ->> 'error' END, 'run', v_dropped > 0 OR v_rows > 0);
    COMMIT;
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.run'));
    RAISE NOTICE 'pgretention: run % %: % partitions dropped, % deferred, % rows deleted', v_run, v_status,
        v_dropped, v_deferred, v_rows;
END
$$;
