-- Job bookkeeping shared by every engine's runner (run, entity_run): the runner's name and the
-- reference time checked, one pgretention.job_run row per run, the lock and batch settings, and
-- the report's check of the runs themselves.

CREATE OR REPLACE FUNCTION pgretention._check_runner(p_runner text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_runner IS NULL OR p_runner NOT IN ('sql', 'cli', 'cron', 'test', 'bench') THEN
        RAISE EXCEPTION 'unknown runner %', coalesce(quote_literal(p_runner), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

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
                  HINT = 'for tests and demos only: SELECT pgretention.setting_set(''allow_future_reference_time'', ''on'')';
    END IF;
END
$$;

-- A job_run row for a run of any engine: the runner and the reference time checked, runs that
-- died (killed backend, server crash) closed as failed unless the caller is nested in a run that
-- holds the lock (its own run is still running: p_close_dead false).
CREATE OR REPLACE FUNCTION pgretention._job_begin(p_runner text, p_now timestamptz, p_summary jsonb,
                                                  p_close_dead boolean)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM pgretention._check_runner(p_runner);
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

-- Close a job_run row; audited (as p_action) when it failed or did something. Job history older
-- than job_history_keep goes.
CREATE OR REPLACE FUNCTION pgretention._job_end(p_run_id bigint, p_summary jsonb, p_status text, p_message text,
                                                p_action text, p_did_work boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE pgretention.job_run SET finished_at = clock_timestamp(), summary = summary || p_summary,
        status = p_status, message = p_message
    WHERE id = p_run_id;
    IF p_status <> 'ok' OR p_did_work THEN
        PERFORM pgretention._audit(p_action, NULL, p_summary || jsonb_build_object('run_id', p_run_id), p_status);
    END IF;
    DELETE FROM pgretention.job_run
    WHERE started_at < now() - pgretention._setting_value('job_history_keep')::interval;
END
$$;

-- The settings every runner reads: lock waits (attempts, longest pause, total wait in seconds),
-- the batch size of row-level work, and the entity engine's adaptive batches.
CREATE OR REPLACE FUNCTION pgretention._job_settings(
    OUT batch int, OUT retries int, OUT backoff_max float8, OUT max_wait float8,
    OUT target_ms float8, OUT batch_max int, OUT max_passes int)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    batch := pgretention._setting_value('batch_size')::int;
    retries := pgretention._setting_value('lock_retries')::int;
    backoff_max := extract(epoch FROM pgretention._setting_value('retry_backoff_max')::interval);
    max_wait := extract(epoch FROM pgretention._setting_value('max_lock_wait_total')::interval);
    target_ms := 1000 * extract(epoch FROM pgretention._setting_value('entity_batch_target')::interval);
    batch_max := greatest(1, pgretention._setting_value('entity_batch_max')::int);
    max_passes := greatest(1, pgretention._setting_value('entity_max_passes')::int);
END
$$;

-- Failed runs (within a week before p_now) and late runs (no successful run within twice the
-- longest gap of the schedule).
CREATE OR REPLACE FUNCTION pgretention.report_check_jobs(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_gap interval := pgretention._setting_value('schedule_max_gap')::interval;
    v_last timestamptz;
    v_failed bigint;
    v_partial bigint;
    v_msg text;
BEGIN
    IF NOT EXISTS (SELECT FROM pgretention.managed_table) THEN
        RETURN;
    END IF;
    section := 'jobs'; object := 'pgretention.run';
    SELECT max(greatest(j.reference_time, j.started_at)) INTO v_last FROM pgretention.job_run j
    WHERE j.status IN ('ok', 'partial') AND greatest(j.reference_time, j.started_at) <= v_now + interval '1 minute';
    IF v_last IS NULL OR v_last < v_now - 2 * v_gap THEN
        severity := 'violation'; check_name := 'late'; value := extract(epoch FROM v_now - v_last)::bigint;
        message := CASE WHEN v_last IS NULL THEN 'no successful run recorded'
                        ELSE format('last successful run %s ago; the schedule runs at least every %s',
                                    date_trunc('second', v_now - v_last), v_gap) END;
        RETURN NEXT;
    END IF;
    SELECT count(*) FILTER (WHERE j.status = 'failed'), count(*) FILTER (WHERE j.status = 'partial'),
           (array_agg(j.message ORDER BY j.id DESC) FILTER (WHERE j.status = 'failed'))[1]
      INTO v_failed, v_partial, v_msg
      FROM pgretention.job_run j
     WHERE j.reference_time > v_now - interval '7 days' AND j.reference_time <= v_now + interval '1 minute';
    IF v_failed > 0 THEN
        severity := 'violation'; check_name := 'failed_runs'; value := v_failed;
        message := format('%s failed runs in the last 7 days (last error: %s)', v_failed, coalesce(v_msg, '-'));
        RETURN NEXT;
    END IF;
    IF v_partial > 0 THEN
        severity := 'warning'; check_name := 'partial_runs'; value := v_partial;
        message := format('%s runs in the last 7 days left partitions for the next run (lock waits)', v_partial);
        RETURN NEXT;
    END IF;
END
$$;
