-- The scheduled entry point. A procedure, because it commits after every partition so that one
-- failure or lock wait never holds back the rest; therefore SECURITY INVOKER without SET clauses
-- (PostgreSQL forbids transaction control otherwise). Every name in it is schema-qualified and all
-- privileged work happens in SECURITY DEFINER functions with a fixed search_path.

-- A reference time in the future would remove data before its time: refused unless the
-- allow_future_reference_time setting is on (tests and demos simulate months in seconds).
CREATE OR REPLACE FUNCTION pgretention._check_reference_time(p_now timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_now > now() + interval '1 minute' AND pgretention._setting_value('allow_future_reference_time') <> 'on' THEN
        RAISE EXCEPTION 'reference time % is in the future: it would remove data before its retention ends', p_now
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'for tests and demos only: SELECT pgretention.set_setting(''allow_future_reference_time'', ''on'')';
    END IF;
END
$$;

-- A job_run row for a run of either engine (partition run, entity run): the runner and the
-- reference time checked, runs that died (killed backend, server crash) closed as failed unless
-- the caller is nested in a run that holds the lock (its own run is still running).
CREATE OR REPLACE FUNCTION pgretention._job_begin(p_runner text, p_now timestamptz, p_summary jsonb,
                                                  p_close_dead boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM pgretention._check_reference_time(p_now);
    IF p_close_dead THEN
        UPDATE pgretention.job_run SET status = 'failed', finished_at = clock_timestamp(),
            message = 'interrupted: the runner ended before finishing'
        WHERE status = 'running';
    END IF;
    INSERT INTO pgretention.job_run (runner, reference_time, summary)
    VALUES (p_runner, p_now, p_summary)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._check_runner(p_runner text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_runner NOT IN ('sql', 'cli', 'cron', 'test', 'bench') THEN
        RAISE EXCEPTION 'unknown runner %', quote_literal(p_runner) USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Close a job_run row; audited (as p_action) when it failed or did something.
CREATE OR REPLACE FUNCTION pgretention._job_end(p_run_id bigint, p_summary jsonb, p_status text, p_message text,
                                                p_action text, p_did_work boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE pgretention.job_run SET finished_at = clock_timestamp(), summary = summary || p_summary,
        status = p_status, message = p_message
    WHERE id = p_run_id;
    IF p_status <> 'ok' OR p_did_work THEN
        PERFORM pgretention._audit(p_action, NULL, p_summary || jsonb_build_object('run_id', p_run_id), p_status);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._run_begin(p_runner text, p_now timestamptz, p_table text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgretention._check_runner(p_runner);
    IF p_table IS NOT NULL THEN
        PERFORM pgretention._managed(p_table);
    END IF;
    RETURN pgretention._job_begin(p_runner, p_now, jsonb_build_object('table', p_table), true);
END
$$;

CREATE OR REPLACE FUNCTION pgretention._run_end(p_run_id bigint, p_summary jsonb, p_status text, p_message text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgretention._job_end(p_run_id, p_summary, p_status, p_message, 'run',
        (p_summary -> 'totals' ->> 'partitions_dropped')::int > 0
        OR (p_summary -> 'totals' ->> 'rows_deleted')::bigint > 0);
    DELETE FROM pgretention.job_run
    WHERE started_at < now() - pgretention._setting_value('job_history_keep')::interval;
END
$$;

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

CREATE OR REPLACE FUNCTION pgretention._run_settings(
    OUT batch int, OUT retries int, OUT backoff_max float8, OUT max_wait float8)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    batch := pgretention._setting_value('batch_size')::int;
    retries := pgretention._setting_value('lock_retries')::int;
    backoff_max := extract(epoch FROM pgretention._setting_value('retry_backoff_max')::interval);
    max_wait := extract(epoch FROM pgretention._setting_value('max_lock_wait_total')::interval);
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
    v_target record;
    v_leaf record;
    v_op bigint;
    v_ok boolean;
    v_n bigint;
    v_attempt int;
    v_sleep float8;
    v_started timestamptz;
    v_err text;
    v_errors jsonb := '[]';
    v_tables jsonb := '{}';
    v_key text;
    v_dropped int := 0;
    v_deferred int := 0;
    v_rows bigint := 0;
    v_status text;
    v_last_table int;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE NOTICE 'pgretention: this server is a standby; nothing to do (run on the primary)';
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgretention.run')) THEN
        RAISE NOTICE 'pgretention: another run is active in this database; nothing to do';
        RETURN;
    END IF;
    v_run := pgretention._run_begin(p_runner, v_now, p_table);
    v_cfg := pgretention._run_settings();
    COMMIT;

    -- 1. work an earlier run or a crash left half-done
    PERFORM pgretention._finalize_pending_detach();
    COMMIT;
    FOR v_op IN SELECT * FROM pgretention._pending_ops() LOOP
        BEGIN
            v_ok := pgretention._finish_op(v_op);
        EXCEPTION WHEN OTHERS THEN
            v_ok := false;
            v_errors := v_errors || pg_catalog.jsonb_build_object('op', v_op, 'error', SQLERRM);
        END;
        COMMIT;
        IF v_ok THEN
            v_dropped := v_dropped + 1;
            RAISE NOTICE 'pgretention: finished pending operation %', v_op;
        END IF;
    END LOOP;

    -- 2. per table and class: premake, drop expired partitions, purge default partitions
    FOR v_target IN SELECT * FROM pgretention._run_targets(p_table) LOOP
        v_key := v_target.table_name || ':' || v_target.class_name;
        v_tables := v_tables || pg_catalog.jsonb_build_object(v_key, pg_catalog.jsonb_build_object(
            'partitions_dropped', 0, 'partitions_deferred', 0, 'rows_deleted', 0, 'premade', 0));

        v_attempt := 0;
        LOOP
            v_attempt := v_attempt + 1;
            BEGIN
                v_n := pgretention._premake(v_target.table_id, v_target.class_name, v_now);
            EXCEPTION WHEN OTHERS THEN
                v_n := 0;
                v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_key, 'step', 'premake', 'error', SQLERRM);
            END;
            COMMIT;
            EXIT WHEN v_n >= 0 OR v_attempt >= 20;
            PERFORM pg_catalog.pg_sleep(0.05 * v_attempt);
        END LOOP;
        v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'premade'], pg_catalog.to_jsonb(greatest(v_n, 0)));

        FOR v_leaf IN SELECT * FROM pgretention._expired_leaves(v_target.table_id, v_target.class_name, v_now) LOOP
            v_attempt := 0;
            v_sleep := 0.01;
            v_started := pg_catalog.clock_timestamp();
            LOOP
                v_attempt := v_attempt + 1;
                BEGIN
                    v_op := pgretention._detach_leaf(v_target.table_id, v_target.class_name, v_leaf.leaf, v_run, v_attempt);
                EXCEPTION WHEN OTHERS THEN
                    v_op := -1;
                    v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_key, 'partition',
                        v_leaf.leaf_name, 'step', 'detach', 'error', SQLERRM);
                END;
                COMMIT;
                EXIT WHEN v_op IS NOT NULL;
                IF v_attempt >= v_cfg.retries
                   OR extract(epoch FROM pg_catalog.clock_timestamp() - v_started) >= v_cfg.max_wait THEN
                    v_op := -2;
                    EXIT;
                END IF;
                PERFORM pg_catalog.pg_sleep(v_sleep);
                v_sleep := least(v_sleep * 2, v_cfg.backoff_max);
            END LOOP;
            IF v_op = -2 THEN
                v_deferred := v_deferred + 1;
                v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'partitions_deferred'],
                    pg_catalog.to_jsonb((v_tables -> v_key ->> 'partitions_deferred')::int + 1));
                RAISE NOTICE 'pgretention: % busy after % lock attempts; left for the next run', v_leaf.leaf, v_attempt;
                CONTINUE;
            END IF;
            CONTINUE WHEN v_op <= 0;
            -- the partition is out of the live table: drop it (retry briefly; else next run)
            FOR i IN 1 .. 50 LOOP
                BEGIN
                    v_ok := pgretention._finish_op(v_op);
                EXCEPTION WHEN OTHERS THEN
                    v_ok := false;
                    v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_key, 'partition',
                        v_leaf.leaf_name, 'step', 'drop', 'error', SQLERRM);
                END;
                COMMIT;
                EXIT WHEN v_ok;
                PERFORM pg_catalog.pg_sleep(0.1);
            END LOOP;
            v_dropped := v_dropped + 1;
            v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'partitions_dropped'],
                pg_catalog.to_jsonb((v_tables -> v_key ->> 'partitions_dropped')::int + 1));
            RAISE NOTICE 'pgretention: dropped partition % of % (% to %, % rows)%', v_leaf.leaf_name, v_key,
                v_leaf.range_from, v_leaf.range_to,
                (SELECT o.rows_estimate FROM pgretention.partition_op o WHERE o.id = v_op),
                CASE WHEN v_ok THEN '' ELSE ' (detached; file removal pending)' END;
        END LOOP;

        LOOP
            BEGIN
                v_n := pgretention._purge_default_batch(v_target.table_id, v_target.class_name, v_now, v_cfg.batch);
            EXCEPTION WHEN OTHERS THEN
                v_n := 0;
                v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_key, 'step', 'default', 'error', SQLERRM);
            END;
            COMMIT;
            v_rows := v_rows + v_n;
            v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'rows_deleted'],
                pg_catalog.to_jsonb((v_tables -> v_key ->> 'rows_deleted')::bigint + v_n));
            IF v_n > 0 THEN
                RAISE NOTICE 'pgretention: deleted % expired rows from the default partition of %', v_n, v_key;
            END IF;
            EXIT WHEN v_n < v_cfg.batch;
        END LOOP;

        -- time-first layout: this class's rows in shared partitions past its period
        FOR v_leaf IN SELECT * FROM pgretention._class_purge_due(v_target.table_id, v_target.class_name, v_now) LOOP
            v_attempt := 0;
            LOOP
                v_attempt := v_attempt + 1;
                BEGIN
                    v_n := pgretention._purge_class_leaf(v_target.table_id, v_target.class_name, v_leaf.leaf,
                                                         v_now, v_cfg.batch);
                EXCEPTION WHEN OTHERS THEN
                    v_n := 0;
                    v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_key, 'partition', v_leaf.leaf_name,
                        'step', 'class purge', 'error', SQLERRM);
                END;
                COMMIT;
                IF v_n < 0 THEN  -- busy: back off, then leave it for the next run
                    EXIT WHEN v_attempt >= v_cfg.retries;
                    PERFORM pg_catalog.pg_sleep(least(0.01 * 2 ^ v_attempt, v_cfg.backoff_max));
                    CONTINUE;
                END IF;
                v_rows := v_rows + v_n;
                v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'rows_deleted'],
                    pg_catalog.to_jsonb((v_tables -> v_key ->> 'rows_deleted')::bigint + v_n));
                EXIT WHEN v_n < v_cfg.batch;
            END LOOP;
        END LOOP;

        -- adopted tables: expired rows of the historical partition, in batches (sql/functions/adopt.sql)
        LOOP
            BEGIN
                v_n := pgretention._adopt_purge_batch(v_target.table_id, v_target.class_name, v_now, v_cfg.batch);
            EXCEPTION WHEN OTHERS THEN
                v_n := 0;
                v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_key, 'step', 'historical', 'error', SQLERRM);
            END;
            COMMIT;
            v_rows := v_rows + v_n;
            v_tables := pg_catalog.jsonb_set(v_tables, ARRAY[v_key, 'rows_deleted'],
                pg_catalog.to_jsonb((v_tables -> v_key ->> 'rows_deleted')::bigint + v_n));
            IF v_n > 0 THEN
                RAISE NOTICE 'pgretention: deleted % expired rows from the historical partition of %', v_n, v_key;
            END IF;
            EXIT WHEN v_n < v_cfg.batch;
        END LOOP;

        -- members moved to a shorter class: once per table
        IF v_last_table IS DISTINCT FROM v_target.table_id THEN
            v_last_table := v_target.table_id;
            LOOP
                BEGIN
                    v_n := pgretention._purge_moved_batch(v_target.table_id, v_now, v_cfg.batch);
                EXCEPTION WHEN OTHERS THEN
                    v_n := 0;
                    v_errors := v_errors || pg_catalog.jsonb_build_object('table', v_target.table_name,
                        'step', 'moved members', 'error', SQLERRM);
                END;
                COMMIT;
                v_rows := v_rows + v_n;
                IF v_n > 0 THEN
                    RAISE NOTICE 'pgretention: deleted % rows of members moved to a shorter class in %', v_n, v_target.table_name;
                END IF;
                EXIT WHEN v_n < v_cfg.batch;
            END LOOP;
        END IF;
    END LOOP;

    -- 3. rows kept in the hold store whose holds ended; proofs of fulfilled requests past 5 years
    BEGIN
        v_n := pgretention._purge_released_holds(v_now);
        v_rows := v_rows + v_n;
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

    -- 4. partitions past anonymise_after are rewritten anonymised (sql/functions/anonymise.sql)
    CALL pgretention.run_anonymiser(v_now, p_table);

    -- 5. row-level rules of entity tables (sql/functions/entity_run.sql), unless one table was asked for
    IF p_table IS NULL AND EXISTS (SELECT FROM pgretention.entity_rule) THEN
        CALL pgretention.run_entities(v_now, NULL, p_runner);
    END IF;

    v_status := CASE WHEN pg_catalog.jsonb_array_length(v_errors) > 0 THEN 'failed'
                     WHEN v_deferred > 0 THEN 'partial' ELSE 'ok' END;
    PERFORM pgretention._run_end(v_run, pg_catalog.jsonb_build_object(
        'tables', v_tables, 'errors', v_errors,
        'totals', pg_catalog.jsonb_build_object('partitions_dropped', v_dropped, 'partitions_deferred', v_deferred,
                                                'rows_deleted', v_rows)),
        v_status, CASE WHEN v_status = 'failed' THEN v_errors -> 0 ->> 'error' END);
    COMMIT;
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.run'));
    RAISE NOTICE 'pgretention: run % %: % partitions dropped, % deferred, % rows deleted', v_run, v_status,
        v_dropped, v_deferred, v_rows;
END
$$;
