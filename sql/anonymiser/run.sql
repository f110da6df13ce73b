-- Running the anonymiser: continue unfinished rewrites, then rewrite every due partition
-- (rewrite.sql has the steps). Procedures: they commit after each step, so they are SECURITY
-- INVOKER without SET clauses and schema-qualify every name; the privileged work happens in the
-- step functions. A step returns NULL when its lock was not granted (core/batches.sql): the
-- procedure backs off and retries, and leaves the partition for the next run when it stays busy.

-- Run the anonymiser (all managed tables, or one). Called by run() after the purge.
CREATE OR REPLACE PROCEDURE pgretention.anon_run(p_now timestamptz DEFAULT NULL, p_table text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, pg_catalog.now());
    v_target record;
    v_leaf record;
    v_op bigint;
    v_failed boolean;
    v_done int := 0;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE NOTICE 'pgretention: this server is a standby; nothing to anonymise';
        RETURN;
    END IF;
    PERFORM pgretention._check_reference_time(p_now);
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgretention.anonymise')) THEN
        RAISE NOTICE 'pgretention: another anonymiser run is active; nothing to do';
        RETURN;
    END IF;
    FOR v_op IN SELECT * FROM pgretention._anon_open_ops() LOOP
        CALL pgretention._anon_drive(v_op);
    END LOOP;
    FOR v_target IN SELECT * FROM pgretention._run_targets(p_table) LOOP
        FOR v_leaf IN SELECT * FROM pgretention._anon_due(v_target.table_id, v_target.class_name, v_now) LOOP
            v_op := NULL;
            v_failed := false;
            FOR v_tries IN 1 .. 50 LOOP
                BEGIN
                    v_op := pgretention._anon_prepare(v_target.table_id, v_target.class_name, v_leaf.leaf, v_now);
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'pgretention: anonymising % failed: %', v_leaf.leaf_name, SQLERRM;
                    v_failed := true;
                END;
                COMMIT;
                EXIT WHEN v_op IS NOT NULL OR v_failed;
                PERFORM pg_catalog.pg_sleep(least(0.01 * 2 ^ v_tries, 0.5));
            END LOOP;
            CONTINUE WHEN v_op IS NULL;
            CALL pgretention._anon_drive(v_op);
            v_done := v_done + 1;
            RAISE NOTICE 'pgretention: anonymised partition % of %', v_leaf.leaf_name, v_target.table_name;
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.anonymise'));
    RAISE NOTICE 'pgretention: anonymiser: % partitions rewritten', v_done;
END
$$;

-- Copy, swap (bounded lock waits, backoff as the run's: lock_retries, retry_backoff_max) and finish
-- one operation. A failing step is reported as a warning and left for the next run; the partition
-- stays as it was.
CREATE OR REPLACE PROCEDURE pgretention._anon_drive(p_op bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    v_cfg record := pgretention._job_settings();
    v_ok boolean;
    v_sleep float8 := 0.01;
BEGIN
    BEGIN
        PERFORM pgretention._anon_copy(p_op);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgretention: anonymisation % (copy) failed: %', p_op, SQLERRM;
        RETURN;
    END;
    COMMIT;
    FOR i IN 1 .. v_cfg.retries LOOP
        BEGIN
            v_ok := pgretention._anon_swap(p_op);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pgretention: anonymisation % (swap) failed: %', p_op, SQLERRM;
            RETURN;
        END;
        COMMIT;
        EXIT WHEN v_ok IS NOT NULL;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := least(v_sleep * 2, v_cfg.backoff_max);
    END LOOP;
    IF v_ok IS NOT TRUE THEN
        RAISE NOTICE 'pgretention: anonymisation swap of operation % left for the next run', p_op;
        RETURN;
    END IF;
    FOR i IN 1 .. 50 LOOP
        v_ok := pgretention._anon_finish(p_op);
        COMMIT;
        EXIT WHEN v_ok IS NOT NULL;
        PERFORM pg_catalog.pg_sleep(0.1);
    END LOOP;
END
$$;
