-- Job bookkeeping shared by every engine's runner (run, entity_run, anon_run): the runner's name
-- and the reference time checked (simulated time only where the installing role allows it), one
-- pgretention.job_run row per run and the run token its helpers check, the lock and batch
-- settings, the runners' pacing, and the report's check of the runs themselves.

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

-- The backend this session runs in: its process id and start time (a process id alone is reused).
CREATE OR REPLACE FUNCTION pgretention._backend_start()
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT a.backend_start FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a $$;

-- Is a backend (process id, start time) still alive? A start time this session may not see
-- (another role's backend, without pg_read_all_stats) counts as alive while the process exists.
CREATE OR REPLACE FUNCTION pgretention._backend_alive(p_pid int, p_start timestamptz)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_pid IS NOT NULL AND EXISTS (
        SELECT FROM pg_catalog.pg_stat_get_activity(p_pid) a
        WHERE a.pid = p_pid AND (a.backend_start IS NULL OR a.backend_start = p_start))
$$;

-- Simulated time. A reference time other than the clock (tests and demos simulate months in
-- seconds) is allowed only in a session in which the installing role (the owner of schema
-- pgretention, or a superuser) called simulation_enable(): a row of pgretention.simulation for
-- this backend, which no other role can read or write. It ends with the session (or
-- simulation_disable()); another session of the same role is not simulating.
CREATE OR REPLACE FUNCTION pgretention.simulation_enable()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
       AND NOT pg_catalog.pg_has_role(session_user,
                                      (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgretention'),
                                      'MEMBER') THEN
        RAISE EXCEPTION 'only the installing role may simulate reference times (session user %)', session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM pgretention.simulation s WHERE NOT pgretention._backend_alive(s.backend_pid, s.backend_start);
    INSERT INTO pgretention.simulation (backend_pid, backend_start)
    VALUES (pg_backend_pid(), pgretention._backend_start())
    ON CONFLICT DO NOTHING;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.simulation_disable()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM pgretention.simulation s
    WHERE s.backend_pid = pg_catalog.pg_backend_pid() AND s.backend_start = pgretention._backend_start()
$$;

-- Is this session simulating?
CREATE OR REPLACE FUNCTION pgretention._simulating()
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM pgretention.simulation s
                   WHERE s.backend_pid = pg_catalog.pg_backend_pid() AND s.backend_start = pgretention._backend_start())
$$;

-- A reference time is the clock (NULL, or within a minute of it); any other one would remove data
-- before its time (future) or date a notice, a fulfilment or a run back (past). Refused unless
-- this session simulates (simulation_enable); infinity never.
CREATE OR REPLACE FUNCTION pgretention._check_reference_time(p_now timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_now IS NULL OR p_now BETWEEN now() - interval '1 minute' AND now() + interval '1 minute' THEN
        RETURN;
    END IF;
    IF NOT isfinite(p_now) THEN
        RAISE EXCEPTION 'reference time % is not a point in time', p_now USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pgretention._simulating() THEN
        RETURN;
    END IF;
    IF p_now > now() THEN
        RAISE EXCEPTION 'reference time % is in the future: it would remove data before its retention ends', p_now
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'simulations (tests, demos) only: the installing role calls pgretention.simulation_enable() in its session';
    END IF;
    RAISE EXCEPTION 'reference time % is in the past: outside a simulation the reference time is the clock', p_now
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'simulations (tests, demos) only: the installing role calls pgretention.simulation_enable() in its session';
END
$$;

-- Runs. A run is a row of pgretention.job_run, begun by _job_begin (which checks the runner and the
-- reference time) and bound to the backend that began it. The runners (run, entity_run, anon_run)
-- are procedures, SECURITY INVOKER, so the helpers they call are granted to the operator; every
-- such helper takes the run's id and accepts it only while it is running in the calling backend
-- (_job_token), reads the reference time from it and derives from the catalog what it may do. The
-- helpers themselves record what they did (counts, errors) in the run's summary: the job history
-- and its audit record never carry a caller's account of a run.

-- A job_run row for a run of an engine: 'run' (the partition engine and everything after it),
-- 'entity', 'anonymiser'; p_target: the one table (run, anonymiser) or rule (entity) asked for.
-- Runs whose backend ended (killed, crashed), and runs of this engine left running by this
-- backend, are closed as failed first.
CREATE OR REPLACE FUNCTION pgretention._job_begin(p_runner text, p_now timestamptz, p_engine text, p_target text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
    v_now timestamptz := coalesce(p_now, now());
    v_start timestamptz := pgretention._backend_start();
    v_summary jsonb;
BEGIN
    PERFORM pgretention._check_runner(p_runner);
    PERFORM pgretention._check_reference_time(p_now);
    CASE p_engine
    WHEN 'run' THEN
        IF p_target IS NOT NULL THEN
            PERFORM pgretention._managed(p_target);
        END IF;
        v_summary := jsonb_build_object('table', p_target,
            'tables', coalesce((SELECT jsonb_object_agg(t.table_name || ':' || t.class_name, jsonb_build_object(
                                    'partitions_dropped', 0, 'partitions_deferred', 0, 'rows_deleted', 0, 'premade', 0))
                                FROM pgretention._run_targets(p_target) t), '{}'),
            'errors', '[]'::jsonb,
            'totals', jsonb_build_object('partitions_dropped', 0, 'partitions_deferred', 0, 'rows_deleted', 0));
    WHEN 'entity' THEN
        IF p_target IS NOT NULL THEN
            PERFORM pgretention._rule(p_target);
        END IF;
        v_summary := jsonb_build_object('engine', 'entity', 'rule', p_target, 'rules', '{}'::jsonb, 'errors', '[]'::jsonb,
                                        'totals', jsonb_build_object('rows', 0, 'deferred', 0));
    WHEN 'anonymiser' THEN
        IF p_target IS NOT NULL THEN
            PERFORM pgretention._managed(p_target);
        END IF;
        v_summary := jsonb_build_object('engine', 'anonymiser', 'table', p_target, 'errors', '[]'::jsonb, 'anonymised', 0);
    ELSE
        RAISE EXCEPTION 'unknown engine %', coalesce(quote_literal(p_engine), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    IF v_now NOT BETWEEN now() - interval '1 minute' AND now() + interval '1 minute' THEN
        v_summary := v_summary || jsonb_build_object('simulated', true);
    END IF;
    UPDATE pgretention.job_run j SET status = 'failed', finished_at = clock_timestamp(),
        message = 'interrupted: the runner ended before finishing'
    WHERE j.status = 'running'
      AND (NOT pgretention._backend_alive(j.backend_pid, j.backend_start)
           OR j.backend_pid = pg_backend_pid() AND j.backend_start = v_start AND j.engine = p_engine);
    INSERT INTO pgretention.job_run (runner, reference_time, summary, engine, backend_pid, backend_start)
    VALUES (p_runner, v_now, v_summary, p_engine, pg_backend_pid(), v_start)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- The run p_run_id, if it is running in this backend; refused otherwise (another session's run,
-- a finished one, or none). Every helper a runner calls starts here.
CREATE OR REPLACE FUNCTION pgretention._job_token(p_run_id bigint)
RETURNS pgretention.job_run
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run;
BEGIN
    SELECT * INTO r FROM pgretention.job_run j WHERE j.id = p_run_id;
    IF NOT FOUND OR r.status <> 'running' OR r.backend_pid IS DISTINCT FROM pg_backend_pid()
       OR r.backend_start IS DISTINCT FROM pgretention._backend_start() THEN
        RAISE EXCEPTION 'run % is not running in this session', coalesce(p_run_id::text, 'NULL')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'runs are begun and ended by pgretention.run, entity_run and anon_run';
    END IF;
    RETURN r;
END
$$;

-- The run's summary, as its helpers record it: add p_n to the number at p_path (objects on the way
-- created), put a value at p_path, append an error (at most 1000 are kept; more are counted).
CREATE OR REPLACE FUNCTION pgretention._jsonb_put(p_doc jsonb, p_path text[], p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := coalesce(p_doc, '{}');
BEGIN
    FOR i IN 1 .. cardinality(p_path) - 1 LOOP
        IF jsonb_typeof(v #> p_path[1:i]) IS DISTINCT FROM 'object' THEN
            v := jsonb_set(v, p_path[1:i], '{}');
        END IF;
    END LOOP;
    RETURN jsonb_set(v, p_path, p_value);
END
$$;

CREATE OR REPLACE FUNCTION pgretention._job_add(p_run_id bigint, p_path text[], p_n bigint)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgretention.job_run j
    SET summary = pgretention._jsonb_put(j.summary, p_path, to_jsonb(coalesce((j.summary #>> p_path)::bigint, 0) + p_n))
    WHERE j.id = p_run_id AND p_n IS NOT NULL AND p_n <> 0
$$;

CREATE OR REPLACE FUNCTION pgretention._job_put(p_run_id bigint, p_path text[], p_value jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgretention.job_run j SET summary = pgretention._jsonb_put(j.summary, p_path, p_value) WHERE j.id = p_run_id
$$;

CREATE OR REPLACE FUNCTION pgretention._job_error(p_run_id bigint, p_error jsonb)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgretention.job_run j
    SET summary = CASE WHEN jsonb_array_length(coalesce(j.summary -> 'errors', '[]')) < 1000
                       THEN jsonb_set(j.summary, '{errors}', coalesce(j.summary -> 'errors', '[]') || jsonb_build_array(p_error))
                       ELSE pgretention._jsonb_put(j.summary, '{errors_not_listed}',
                                                   to_jsonb(coalesce((j.summary ->> 'errors_not_listed')::bigint, 0) + 1)) END
    WHERE j.id = p_run_id
$$;

-- End the run of this backend: its status follows from what its helpers recorded (failed: an
-- error; partial: work left for the next run because a lock stayed busy; ok). The caller adds
-- only what it alone knows, and only to the worse: p_deferred counts units it gave up on, by the
-- run's own keys (run: its table:class keys; entity: its rules). Audited (action run, entity.run
-- or anon.run) when the run failed or did something; job history older than job_history_keep goes.
CREATE OR REPLACE FUNCTION pgretention._job_end(p_run_id bigint, p_deferred jsonb DEFAULT '{}')
RETURNS pgretention.job_run
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    d record;
    v_deferred bigint := 0;
    v_status text;
    v_work boolean;
BEGIN
    IF p_deferred IS NOT NULL AND jsonb_typeof(p_deferred) <> 'object' THEN
        RAISE EXCEPTION 'deferred units must be a JSON object of counts' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR d IN SELECT k.key, k.value FROM jsonb_each(coalesce(p_deferred, '{}')) k LOOP
        IF jsonb_typeof(d.value) <> 'number' OR d.value::text !~ '^[0-9]{1,6}$' THEN
            RAISE EXCEPTION 'deferred count of % must be a whole number below one million', d.key
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CASE r.engine
        WHEN 'run' THEN
            IF NOT r.summary -> 'tables' ? d.key THEN
                RAISE EXCEPTION 'run % has no table %', p_run_id, d.key USING ERRCODE = 'invalid_parameter_value';
            END IF;
            r.summary := pgretention._jsonb_put(r.summary, ARRAY['tables', d.key, 'partitions_deferred'],
                to_jsonb(coalesce((r.summary #>> ARRAY['tables', d.key, 'partitions_deferred'])::bigint, 0) + d.value::text::bigint));
        WHEN 'entity' THEN
            IF NOT r.summary -> 'rules' ? d.key THEN
                RAISE EXCEPTION 'run % has no rule %', p_run_id, d.key USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSE
            RAISE EXCEPTION 'run % records no deferred units', p_run_id USING ERRCODE = 'invalid_parameter_value';
        END CASE;
        v_deferred := v_deferred + d.value::text::bigint;
    END LOOP;
    IF r.engine = 'run' THEN
        r.summary := jsonb_set(r.summary, '{totals,partitions_deferred}',
                               to_jsonb((r.summary #>> '{totals,partitions_deferred}')::bigint + v_deferred));
        v_work := (r.summary #>> '{totals,partitions_dropped}')::bigint > 0 OR (r.summary #>> '{totals,rows_deleted}')::bigint > 0;
    ELSIF r.engine = 'entity' THEN
        r.summary := jsonb_set(r.summary, '{totals,deferred}', to_jsonb((r.summary #>> '{totals,deferred}')::bigint + v_deferred));
        v_work := (r.summary #>> '{totals,rows}')::bigint > 0;
    ELSE
        v_work := (r.summary ->> 'anonymised')::bigint > 0;
    END IF;
    v_status := CASE WHEN jsonb_array_length(r.summary -> 'errors') > 0 OR r.summary ? 'errors_not_listed' THEN 'failed'
                     WHEN v_deferred > 0 THEN 'partial' ELSE 'ok' END;
    UPDATE pgretention.job_run j SET finished_at = clock_timestamp(), summary = r.summary, status = v_status,
        message = CASE WHEN v_status = 'failed' THEN r.summary -> 'errors' -> 0 ->> 'error' END
    WHERE j.id = p_run_id
    RETURNING * INTO r;
    IF v_status <> 'ok' OR v_work THEN
        PERFORM pgretention._audit(CASE r.engine WHEN 'entity' THEN 'entity.run' WHEN 'anonymiser' THEN 'anon.run' ELSE 'run' END,
                                   NULL, r.summary || jsonb_build_object('run_id', p_run_id), v_status);
    END IF;
    DELETE FROM pgretention.job_run
    WHERE started_at < now() - pgretention._setting_value('job_history_keep')::interval;
    RETURN r;
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

-- The runners' pacing, as functions with a fixed search_path: the procedures (which cannot have
-- one) do no arithmetic of mixed types themselves (see run.sql).
-- The next pause of a backoff: doubled, at most p_max seconds.
CREATE OR REPLACE FUNCTION pgretention._pause_next(p_sleep float8, p_max float8)
RETURNS float8
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT least(p_sleep * 2, p_max) $$;

-- Has a unit waited long enough for its lock: p_attempts made, or p_max_wait seconds since p_started?
CREATE OR REPLACE FUNCTION pgretention._waited_enough(p_attempts int, p_retries int, p_started timestamptz,
                                                      p_max_wait float8)
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT p_attempts >= p_retries OR date_part('epoch', clock_timestamp() - p_started) >= p_max_wait $$;

-- Milliseconds since p_t0.
CREATE OR REPLACE FUNCTION pgretention._ms_since(p_t0 timestamptz)
RETURNS float8
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 1000 * date_part('epoch', clock_timestamp() - p_t0) $$;

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
    WHERE j.status IN ('ok', 'partial') AND greatest(j.reference_time, j.started_at) <= v_now + interval '1 minute'
      AND j.engine IS DISTINCT FROM 'anonymiser';  -- a run of the anonymiser alone is not the schedule's
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
