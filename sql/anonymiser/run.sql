-- Running the anonymiser: continue unfinished rewrites, then rewrite every due partition
-- (rewrite.sql has the steps). Procedures: they commit after each step, so they are SECURITY
-- INVOKER without SET clauses (see "The procedures of pgretention" in run.sql: the search_path
-- is pinned after every COMMIT, every name is qualified). Their privileged work happens in
-- _anon_work and _anon_step, which take the run's id (core/jobs.sql) and use the run's reference
-- time; the step functions of rewrite.sql are granted to no one. A step returns NULL when its lock
-- was not granted (core/batches.sql): the procedure backs off and retries, and leaves the
-- partition for the next run when it stays busy. An error is recorded in the run (which ends
-- 'failed') and the anonymiser goes on with the next partition and table.

-- The partitions of a (table, class) due at the run's reference time. A table whose due partitions
-- cannot be found (a column of its holds renamed, a partition gone) is recorded as the run's
-- error and has none: the other tables go on.
CREATE OR REPLACE FUNCTION pgretention._anon_work(p_run_id bigint, p_table_id int, p_class text)
RETURNS TABLE (leaf regclass, leaf_name name)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    v_items jsonb;
BEGIN
    BEGIN
        SELECT coalesce(jsonb_agg(jsonb_build_object('leaf', d.leaf::oid, 'leaf_name', d.leaf_name)
                                  ORDER BY d.lower_abs), '[]')
        INTO v_items FROM pgretention._anon_due_of(p_table_id, p_class, r.reference_time, NULL) d;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pgretention._job_error(p_run_id, jsonb_build_object(
            'table', pgretention._run_key(p_table_id, p_class), 'step', 'anonymise', 'error', SQLERRM));
        RETURN;
    END;
    RETURN QUERY SELECT x.leaf::regclass, x.leaf_name FROM jsonb_to_recordset(v_items) AS x(leaf oid, leaf_name name);
END
$$;

-- One step of a rewrite in the run p_run_id: 'prepare' (p_table_id, p_class, p_leaf: the
-- operation's id, 0 when the partition is not due at the run's reference time), 'copy' (rows
-- copied), 'swap', 'finish' (1 done, 0 not yet possible) of the operation p_op. res is NULL when
-- a lock was not granted; failed: the step raised an error, which is recorded in the run.
CREATE OR REPLACE FUNCTION pgretention._anon_step(
    p_run_id bigint, p_step text, p_op bigint, p_table_id int DEFAULT NULL, p_class text DEFAULT NULL,
    p_leaf regclass DEFAULT NULL, OUT res bigint, OUT failed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    o pgretention.anon_op;
BEGIN
    failed := false;
    BEGIN
        CASE p_step
        WHEN 'prepare' THEN
            res := pgretention._anon_prepare(p_table_id, p_class, p_leaf, r.reference_time);
        WHEN 'copy' THEN
            res := pgretention._anon_copy(p_op);
        WHEN 'swap' THEN
            res := CASE pgretention._anon_swap(p_op) WHEN true THEN 1 WHEN false THEN 0 END;
        WHEN 'finish' THEN
            res := CASE pgretention._anon_finish(p_op) WHEN true THEN 1 WHEN false THEN 0 END;
            IF res = 1 THEN
                PERFORM pgretention._job_add(p_run_id, '{anonymised}', 1);
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown step %', coalesce(quote_literal(p_step), 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END CASE;
    EXCEPTION WHEN OTHERS THEN
        res := NULL;
        failed := true;
        SELECT * INTO o FROM pgretention.anon_op a WHERE a.id = p_op;
        PERFORM pgretention._job_error(p_run_id, jsonb_strip_nulls(jsonb_build_object(
            'table', pgretention._run_key(coalesce(p_table_id, o.table_id), coalesce(p_class, o.class_name)),
            'partition', coalesce((SELECT k.relname FROM pg_class k WHERE k.oid = p_leaf), o.partition_name),
            'op', p_op, 'step', 'anonymise ' || p_step, 'error', SQLERRM)));
    END;
END
$$;

-- Run the anonymiser (all managed tables, or one) as a run of its own. run() calls _anon_run in
-- its own run instead.
CREATE OR REPLACE PROCEDURE pgretention.anon_run(p_now timestamptz DEFAULT NULL, p_table text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_run bigint;
    v_end pgretention.job_run;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE NOTICE 'pgretention: this server is a standby; nothing to anonymise';
        RETURN;
    END IF;
    v_run := pgretention._job_begin('sql', p_now, 'anonymiser', p_table);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    CALL pgretention._anon_run(v_run, p_table);
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_end := pgretention._job_end(v_run);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
END
$$;

-- The anonymiser's work in the run p_run_id: unfinished rewrites first, then every due partition.
CREATE OR REPLACE PROCEDURE pgretention._anon_run(p_run_id bigint, p_table text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_target record;
    v_leaf record;
    v_op bigint;
    v_res record;
    v_sleep float8;
    v_done int := 0;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgretention.anonymise')) THEN
        RAISE NOTICE 'pgretention: another anonymiser run is active; nothing to do';
        RETURN;
    END IF;
    FOR v_op IN SELECT * FROM pgretention._anon_open_ops() LOOP
        CALL pgretention._anon_drive(p_run_id, v_op);
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    END LOOP;
    FOR v_target IN SELECT * FROM pgretention._run_targets(p_table) LOOP
        FOR v_leaf IN SELECT * FROM pgretention._anon_work(p_run_id, v_target.table_id, v_target.class_name) LOOP
            v_op := NULL;
            v_sleep := 0.02;
            FOR v_tries IN 1 .. 50 LOOP
                v_res := pgretention._anon_step(p_run_id, 'prepare', NULL, v_target.table_id, v_target.class_name,
                                                v_leaf.leaf);
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                v_op := v_res.res;
                EXIT WHEN v_op IS NOT NULL OR v_res.failed;
                PERFORM pg_catalog.pg_sleep(v_sleep);
                v_sleep := pgretention._pause_next(v_sleep, 0.5::float8);
            END LOOP;
            CONTINUE WHEN v_op IS NULL OR v_op OPERATOR(pg_catalog.=) 0::bigint;
            CALL pgretention._anon_drive(p_run_id, v_op);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            v_done := v_done + 1;
            RAISE NOTICE 'pgretention: anonymised partition % of %', v_leaf.leaf_name, v_target.table_name;
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.anonymise'));
    RAISE NOTICE 'pgretention: anonymiser: % partitions rewritten', v_done;
END
$$;

-- Copy, swap (bounded lock waits, backoff as the run's: lock_retries, retry_backoff_max) and finish
-- one operation in the run p_run_id. A failing step is recorded in the run and left for the next
-- run; the partition stays as it was.
CREATE OR REPLACE PROCEDURE pgretention._anon_drive(p_run_id bigint, p_op bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    v_cfg record;
    v_res record;
    v_sleep float8 := 0.01;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_cfg := pgretention._job_settings();
    v_res := pgretention._anon_step(p_run_id, 'copy', p_op);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF v_res.failed THEN
        RAISE WARNING 'pgretention: anonymisation % (copy) failed; left for the next run', p_op;
        RETURN;
    END IF;
    FOR i IN 1 .. v_cfg.retries LOOP
        v_res := pgretention._anon_step(p_run_id, 'swap', p_op);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        IF v_res.failed THEN
            RAISE WARNING 'pgretention: anonymisation % (swap) failed; left for the next run', p_op;
            RETURN;
        END IF;
        EXIT WHEN v_res.res IS NOT NULL;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := pgretention._pause_next(v_sleep, v_cfg.backoff_max);
    END LOOP;
    IF v_res.res IS DISTINCT FROM 1::bigint THEN
        RAISE NOTICE 'pgretention: anonymisation swap of operation % left for the next run', p_op;
        RETURN;
    END IF;
    FOR i IN 1 .. 50 LOOP
        v_res := pgretention._anon_step(p_run_id, 'finish', p_op);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        EXIT WHEN v_res.res IS NOT NULL OR v_res.failed;
        PERFORM pg_catalog.pg_sleep(0.1);
    END LOOP;
END
$$;
