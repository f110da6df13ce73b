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
--   4. partitions past anonymise_after, rewritten anonymised (CALL _anon_run, anonymiser/);
--   5. row-level rules of entity tables (CALL entity_run, entity/), unless one table was asked for.
-- Step 2 is one loop: _run_work lists the work of a step, _run_step does one unit of it. A unit
-- that needs a lock returns NULL when it was not granted (core/batches.sql): the loop backs off and
-- retries (lock_retries, retry_backoff_max, max_lock_wait_total) and then leaves it for the next
-- run (the run is 'partial'); a batch step repeats while it deletes full batches; an error is
-- recorded and the run goes on (the run is 'failed').
--
-- run is a procedure, because it commits after every unit so that one failure or lock wait never
-- holds back the rest; therefore SECURITY INVOKER without SET clauses (PostgreSQL forbids
-- transaction control otherwise): see "The procedures of pgretention" below for how it stays
-- immune to the caller's search_path. Its privileged work happens in SECURITY DEFINER functions
-- that take the run's id (the run token, core/jobs.sql), read the reference time from the run and
-- record what they did in it; the procedure itself passes on nothing they trust.

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

-- The key of a (table, class) pair in a run's summary: "schema.table:class".
CREATE OR REPLACE FUNCTION pgretention._run_key(p_table_id int, p_class text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('%I.%I', m.table_schema, m.table_name) || ':' || p_class FROM pgretention.managed_table m
    WHERE m.id = p_table_id
$$;

-- The work of one step for a (table, class) pair at p_now: the partitions (or the one unit) it
-- acts on. label names the object in messages; batched: the step repeats while it deletes full
-- batches. Read-only; the run lists through _run_work.
CREATE OR REPLACE FUNCTION pgretention._run_items(p_step text, p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (op bigint, leaf regclass, leaf_name name, range_from text, range_to text, label text, batched boolean)
LANGUAGE plpgsql STABLE
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

-- The work of one step of the run p_run_id, at the run's reference time. A table whose work cannot
-- even be listed (a column renamed under a hold, a dropped partition parent) is recorded as the
-- run's error and has none: the run goes on with the next.
CREATE OR REPLACE FUNCTION pgretention._run_work(p_run_id bigint, p_step text, p_table_id int, p_class text)
RETURNS TABLE (op bigint, leaf regclass, leaf_name name, range_from text, range_to text, label text, batched boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    v_items jsonb;
BEGIN
    BEGIN
        SELECT coalesce(jsonb_agg(jsonb_build_object('op', i.op, 'leaf', i.leaf::oid, 'leaf_name', i.leaf_name,
                                                     'range_from', i.range_from, 'range_to', i.range_to,
                                                     'label', i.label, 'batched', i.batched)), '[]')
        INTO v_items FROM pgretention._run_items(p_step, p_table_id, p_class, r.reference_time) i;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pgretention._job_error(p_run_id, jsonb_strip_nulls(jsonb_build_object(
            'table', coalesce(pgretention._run_key(p_table_id, p_class), p_table_id::text), 'step', p_step,
            'error', SQLERRM)));
        RETURN;
    END;
    RETURN QUERY SELECT x.op, x.leaf::regclass, x.leaf_name, x.range_from, x.range_to, x.label, x.batched
                 FROM jsonb_to_recordset(v_items) AS x(op bigint, leaf oid, leaf_name name, range_from text,
                                                        range_to text, label text, batched boolean);
END
$$;

-- One unit of a step of the run p_run_id, in the caller's transaction, at the run's reference time
-- and with the batch size of the settings. Every unit checks for itself what it may remove (an
-- expired partition not under hold, rows past their period): whatever a caller passes, a unit
-- removes at most what a run at the run's reference time would. n: its result (partitions premade,
-- the id of the detach operation (0: nothing detached), 1 for a finished operation, rows deleted
-- by a batch), or NULL when its lock was not granted; failed: it raised an error, which is
-- recorded in the run (and the unit rolled back). What it did is counted in the run's summary.
CREATE OR REPLACE FUNCTION pgretention._run_step(
    p_run_id bigint, p_step text, p_table_id int, p_class text, p_leaf regclass, p_op bigint, p_attempt int,
    OUT n bigint, OUT failed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    v_now timestamptz := r.reference_time;
    v_batch int := pgretention._setting_value('batch_size')::int;
    v_key text := pgretention._run_key(p_table_id, p_class);
BEGIN
    failed := false;
    IF p_step IS NULL OR p_step NOT IN ('finish', 'premake', 'detach', 'drop', 'default', 'class purge', 'historical',
                                        'moved members', 'hold store', 'request proofs', 'audit retention') THEN
        RAISE EXCEPTION 'unknown step %', coalesce(quote_literal(p_step), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        n := CASE p_step
            WHEN 'finish' THEN CASE WHEN pgretention._finish_op(p_op, v_now) THEN 1 END
            WHEN 'drop' THEN CASE WHEN pgretention._finish_op(p_op, v_now) THEN 1 END
            WHEN 'premake' THEN pgretention._premake(p_table_id, p_class, v_now)
            WHEN 'detach' THEN pgretention._detach_leaf(p_table_id, p_class, p_leaf, v_now, p_run_id, p_attempt)
            WHEN 'default' THEN pgretention._purge_default_batch(p_table_id, p_class, v_now, v_batch)
            WHEN 'class purge' THEN pgretention._purge_class_leaf(p_table_id, p_class, p_leaf, v_now, v_batch)
            WHEN 'historical' THEN pgretention._adopt_purge_batch(p_table_id, p_class, v_now, v_batch)
            WHEN 'moved members' THEN pgretention._purge_moved_batch(p_table_id, v_now, v_batch)
            WHEN 'hold store' THEN pgretention._purge_released_holds(v_now, p_run_id)
            WHEN 'request proofs' THEN pgretention._purge_request_proofs(v_now)
            -- the audit log's own retention is measured against the clock, never a simulated time
            WHEN 'audit retention' THEN pgretention.audit_retention()
        END;
    EXCEPTION WHEN OTHERS THEN
        n := NULL;
        failed := true;
        PERFORM pgretention._job_error(p_run_id, jsonb_strip_nulls(jsonb_build_object(
            'table', CASE WHEN p_step = 'moved members' THEN (SELECT format('%I.%I', m.table_schema, m.table_name)
                                                            FROM pgretention.managed_table m WHERE m.id = p_table_id)
                          ELSE v_key END,
            'op', CASE WHEN p_step = 'finish' THEN p_op END,
            'partition', (SELECT k.relname FROM pg_class k WHERE k.oid = p_leaf),
            'step', p_step, 'error', SQLERRM)));
        RETURN;
    END;
    -- the run's summary: what this unit did
    CASE p_step
    WHEN 'finish' THEN
        PERFORM pgretention._job_add(p_run_id, '{totals,partitions_dropped}', n);
    WHEN 'premake' THEN
        IF v_key IS NOT NULL THEN
            PERFORM pgretention._job_put(p_run_id, ARRAY['tables', v_key, 'premade'], to_jsonb(coalesce(n, 0)));
        END IF;
    WHEN 'detach' THEN
        IF n > 0 THEN
            PERFORM pgretention._job_add(p_run_id, ARRAY['tables', v_key, 'partitions_dropped'], 1);
            PERFORM pgretention._job_add(p_run_id, '{totals,partitions_dropped}', 1);
        END IF;
    WHEN 'default', 'class purge', 'historical' THEN
        PERFORM pgretention._job_add(p_run_id, ARRAY['tables', v_key, 'rows_deleted'], n);
        PERFORM pgretention._job_add(p_run_id, '{totals,rows_deleted}', n);
    WHEN 'moved members', 'hold store' THEN
        PERFORM pgretention._job_add(p_run_id, '{totals,rows_deleted}', n);
    ELSE
        NULL;
    END CASE;
END
$$;

-- The procedures of pgretention (run here, entity_run, anon_run, _anon_run, _anon_drive, adopt)
-- commit between units of work, so they cannot have SET clauses: they run with the caller's
-- search_path, which for the pg_cron job and the CLI is the default "$user", public, where the
-- database owner (and anyone with CREATE there) can plant operators and functions. Hence, in every
-- procedure:
--   * the first statement, and the first after every COMMIT, pins the search_path of the
--     transaction: pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
--   * every name is schema-qualified, and no operator is applied to operands of different types
--     (the arithmetic of pauses and batch sizes is in functions with a fixed search_path:
--     _pause_next, _waited_enough, _ms_since, _entity_next_limit);
--   * all privileged work happens in SECURITY DEFINER functions with a fixed search_path, which
--     take the run's id (core/jobs.sql).
-- tests/security/test_owner_and_dbowner.py plants an operator for every pair of types the
-- catalog's operators would otherwise reach by an implicit cast, and runs every procedure.

CREATE OR REPLACE PROCEDURE pgretention.run(
    p_now timestamptz DEFAULT NULL,
    p_table text DEFAULT NULL,
    p_runner text DEFAULT 'sql')
LANGUAGE plpgsql
AS $$
DECLARE
    v_run bigint;
    v_cfg record;
    v_st record;
    v_item record;
    v_res record;
    v_key text;
    v_todo text;
    v_next text;
    v_op bigint;
    v_attempt int;
    v_sleep float8;
    v_started timestamptz;
    v_deferred jsonb := '{}';
    v_end pgretention.job_run;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
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
    BEGIN
        v_run := pgretention._job_begin(p_runner, p_now, 'run', p_table);
    EXCEPTION WHEN OTHERS THEN  -- refused (a reference time not the clock): the lock is not kept
        PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.run'));
        RAISE;
    END;
    v_cfg := pgretention._job_settings();
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- 1. and 2.: interrupted DETACH ... CONCURRENTLY first, then the steps (see the top of this file)
    PERFORM pgretention._finalize_pending_detach();
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    FOR v_st IN SELECT * FROM pgretention._run_steps(p_table) LOOP
        v_key := v_st.table_name || ':' || v_st.class_name;
        FOR v_item IN SELECT * FROM pgretention._run_work(v_run, v_st.step, v_st.table_id, v_st.class_name) LOOP
            v_todo := v_st.step;
            v_op := v_item.op;
            WHILE v_todo IS NOT NULL LOOP
                -- one unit, retried while its lock is not granted
                v_attempt := 0;
                v_sleep := 0.01;
                v_started := pg_catalog.clock_timestamp();
                LOOP
                    v_attempt := v_attempt + 1;
                    v_res := pgretention._run_step(v_run, v_todo, v_st.table_id, v_st.class_name, v_item.leaf, v_op,
                                                   v_attempt);
                    COMMIT;
                    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                    EXIT WHEN v_res.failed OR v_res.n IS NOT NULL;
                    EXIT WHEN pgretention._waited_enough(v_attempt, v_cfg.retries, v_started, v_cfg.max_wait);
                    PERFORM pg_catalog.pg_sleep(v_sleep);
                    v_sleep := pgretention._pause_next(v_sleep, v_cfg.backoff_max);
                END LOOP;
                -- what came of it
                v_next := NULL;
                IF NOT v_res.failed AND v_res.n IS NULL AND v_todo <> 'drop' THEN
                    IF v_key IS NOT NULL THEN
                        v_deferred := pg_catalog.jsonb_set(v_deferred, ARRAY[v_key],
                            pg_catalog.to_jsonb(coalesce((v_deferred ->> v_key)::int, 0) + 1));
                    END IF;
                    RAISE NOTICE 'pgretention: % busy after % lock attempts; left for the next run', v_item.label, v_attempt;
                END IF;
                CASE v_todo
                WHEN 'finish' THEN
                    IF v_res.n IS NOT NULL THEN
                        RAISE NOTICE 'pgretention: finished pending operation %', v_op;
                    END IF;
                WHEN 'detach' THEN
                    IF v_res.n > 0::bigint THEN  -- out of the live table: drop it
                        v_op := v_res.n;
                        v_next := 'drop';
                    END IF;
                WHEN 'drop' THEN  -- not dropped (busy, failed): finished by the next run
                    RAISE NOTICE 'pgretention: dropped partition % of % (% to %, % rows)%', v_item.leaf_name, v_key,
                        v_item.range_from, v_item.range_to,
                        (SELECT o.rows_estimate FROM pgretention.partition_op o WHERE o.id OPERATOR(pg_catalog.=) v_op),
                        CASE WHEN v_res.n IS NOT NULL THEN '' ELSE ' (detached; file removal pending)' END;
                WHEN 'premake' THEN
                    NULL;
                ELSE  -- batches of rows
                    IF v_res.n > 0::bigint AND v_todo = 'default' THEN
                        RAISE NOTICE 'pgretention: deleted % expired rows from the default partition of %', v_res.n, v_key;
                    ELSIF v_res.n > 0::bigint AND v_todo = 'historical' THEN
                        RAISE NOTICE 'pgretention: deleted % expired rows from the historical partition of %', v_res.n, v_key;
                    ELSIF v_res.n > 0::bigint AND v_todo = 'moved members' THEN
                        RAISE NOTICE 'pgretention: deleted % rows of members moved to a shorter class in %', v_res.n,
                            v_st.table_name;
                    END IF;
                    IF v_item.batched AND v_res.n >= v_cfg.batch::bigint THEN
                        v_next := v_todo;  -- a full batch: there may be more
                    END IF;
                END CASE;
                v_todo := v_next;
            END LOOP;
        END LOOP;
    END LOOP;

    -- 3. rows kept in the hold store whose holds ended; proofs of fulfilled requests past 5 years;
    -- the audit log's own retention (5 years, with a checkpoint keeping the chain verifiable)
    FOREACH v_todo IN ARRAY ARRAY['hold store', 'request proofs', 'audit retention'] LOOP
        v_res := pgretention._run_step(v_run, v_todo, NULL, NULL, NULL, NULL, 1);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    END LOOP;

    -- 4. partitions past anonymise_after are rewritten anonymised (anonymiser/), in this run
    CALL pgretention._anon_run(v_run, p_table);
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- 5. row-level rules of entity tables (entity/), unless one table was asked for
    IF p_table IS NULL AND EXISTS (SELECT FROM pgretention.entity_rule) THEN
        CALL pgretention.entity_run(p_now, NULL, p_runner);
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    END IF;

    v_end := pgretention._job_end(v_run, v_deferred);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.run'));
    RAISE NOTICE 'pgretention: run % %: % partitions dropped, % deferred, % rows deleted', v_run, v_end.status,
        v_end.summary #>> '{totals,partitions_dropped}', v_end.summary #>> '{totals,partitions_deferred}',
        v_end.summary #>> '{totals,rows_deleted}';
END
$$;
