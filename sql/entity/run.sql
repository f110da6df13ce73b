-- Entity engine, execution: CALL pgretention.entity_run(p_now, p_rule).
-- Per rule: build the work set (rows whose whole subtree is expired; notices listed and
-- cancelled), then handle it in short batch transactions. Each batch locks its rows with
-- SKIP LOCKED, re-checks every condition under the lock, cleans declared dependants, deletes or
-- anonymises the rows, counts them in the rule and writes one audit record. A killed run loses
-- nothing: a batch is one transaction, and the next run rebuilds the work set.

-- Rules a run works on.
CREATE OR REPLACE FUNCTION pgretention._entity_run_rules(p_rule text)
RETURNS TABLE (rule_id int, rule_name text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_rule IS NOT NULL THEN
        PERFORM pgretention._rule(p_rule);
    END IF;
    RETURN QUERY SELECT r.id, r.rule_name FROM pgretention.entity_rule r
    WHERE r.enabled AND (p_rule IS NULL OR r.rule_name = p_rule) ORDER BY r.id;
END
$$;

-- Build a rule's work set at p_now and refresh its notices (first listed at p_now). Reads the table
-- without locking rows.
-- Returns the rows due now (after hierarchy and notice checks), and notices listed / cancelled.
CREATE OR REPLACE FUNCTION pgretention._entity_prepare(p_rule_id int, p_now timestamptz,
    OUT due bigint, OUT listed bigint, OUT cancelled bigint, OUT in_notice bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_rule pgretention.entity_rule;
    v_table text;
    v_horizon timestamptz;
    v_n bigint;
    v_before bigint;
    v_rows jsonb;
    v_keys text[];
BEGIN
    SELECT * INTO v_rule FROM pgretention.entity_rule r WHERE r.id = p_rule_id FOR UPDATE;
    v_table := format('%I.%I', v_rule.table_schema, v_rule.table_name);
    listed := 0; cancelled := 0; in_notice := 0;
    DELETE FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id;
    -- candidates: rows that expire by p_now (or within the notice period)
    v_horizon := p_now - v_rule.period + coalesce(v_rule.notice_period, interval '0');
    -- the owner's rows are read with the owner's rights (sql/core/exec.sql); the work set is ours
    v_rows := pgretention._as_owner_value(v_table::regclass, format(
        'SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(x.k::text, x.p, x.a))'
        ' FROM (SELECT t.%1$I AS k, %2$s AS p, %3$s AS a FROM %4$s t WHERE %5$s) x WHERE x.a <= $1[1]::timestamptz',
        v_rule.key_column,
        CASE WHEN v_rule.parent_column IS NULL THEN 'NULL::text' ELSE format('t.%I::text', v_rule.parent_column) END,
        pgretention._entity_activity_sql(p_rule_id), v_table, pgretention._entity_eligible_sql(p_rule_id)),
        ARRAY[v_horizon::text]);
    INSERT INTO pgretention.entity_work (rule_id, key, parent_key, expires_at)
    SELECT p_rule_id, e.value ->> 0, e.value ->> 1, (e.value ->> 2)::timestamptz + v_rule.period
    FROM jsonb_array_elements(coalesce(v_rows, '[]')) e;
    -- hierarchy: a row stays a candidate only while every child row is a candidate too
    IF v_rule.parent_column IS NOT NULL THEN
        FOR i IN 1 .. 64 LOOP
            v_keys := ARRAY(SELECT w.key FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id);
            -- candidates with a child that is not a candidate
            v_rows := pgretention._as_owner_value(v_table::regclass, format(
                'SELECT pg_catalog.jsonb_agg(DISTINCT c.%1$I::text) FROM %2$s c'
                ' WHERE c.%1$I::text = ANY ($1) AND NOT (c.%3$I::text = ANY ($1))',
                v_rule.parent_column, v_table, v_rule.key_column), v_keys);
            DELETE FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id
                AND w.key IN (SELECT jsonb_array_elements_text(coalesce(v_rows, '[]')));
            GET DIAGNOSTICS v_n = ROW_COUNT;
            EXIT WHEN v_n = 0;
        END LOOP;
    END IF;
    IF v_rule.notice_period IS NOT NULL THEN
        SELECT count(*) INTO v_before FROM pgretention.entity_notice n WHERE n.rule_id = p_rule_id;
        -- no longer expiring (active again, exempted, gone): notice cancelled
        DELETE FROM pgretention.entity_notice n WHERE n.rule_id = p_rule_id
            AND NOT EXISTS (SELECT 1 FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id AND w.key = n.key);
        GET DIAGNOSTICS cancelled = ROW_COUNT;
        INSERT INTO pgretention.entity_notice AS n (rule_id, key, parent_key, first_listed_at, expires_at)
        SELECT w.rule_id, w.key, w.parent_key, p_now, w.expires_at FROM pgretention.entity_work w
        WHERE w.rule_id = p_rule_id
        ON CONFLICT (rule_id, key) DO UPDATE SET expires_at = excluded.expires_at, parent_key = excluded.parent_key;
        SELECT count(*) INTO in_notice FROM pgretention.entity_notice n WHERE n.rule_id = p_rule_id;
        listed := in_notice - (v_before - cancelled);
        -- due now: expired, and listed for at least the notice period
        DELETE FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id AND (w.expires_at > p_now
            OR NOT EXISTS (SELECT 1 FROM pgretention.entity_notice n WHERE n.rule_id = p_rule_id AND n.key = w.key
                           AND n.first_listed_at <= p_now - v_rule.notice_period));
        IF listed > 0 OR cancelled > 0 THEN
            PERFORM pgretention._audit('entity.notice', v_table, jsonb_build_object('rule', v_rule.rule_name,
                'listed', listed, 'cancelled', cancelled, 'in_notice', in_notice, 'reference_time', p_now));
        END IF;
    END IF;
    SELECT count(*) INTO due FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id;
END
$$;

-- One batch: up to p_limit keys of pass p_pass. Locks the rows (SKIP LOCKED), re-checks them under
-- the lock, cleans dependants, deletes or anonymises, records and audits. Rows not handled (a child
-- row still there, locked by someone, active again) go to the next pass.
-- Returns picked (keys taken from the work set) and done (rows deleted or anonymised); both NULL
-- when a lock was not granted within lock_timeout (nothing changed; the caller retries).
CREATE OR REPLACE FUNCTION pgretention._entity_batch(p_rule_id int, p_now timestamptz, p_pass int, p_limit int,
    p_run_id bigint, OUT picked int, OUT done int)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_rule pgretention.entity_rule;
    v_table text;
    v_keys text[];
    v_ok text[];
    v_cond text;
    v_dep jsonb;
    v_name record;
    v_n bigint;
    v_deps jsonb := '{}';
    v_dep_total bigint := 0;
    v_lock_timeout text := current_setting('lock_timeout');
    v_started timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO v_rule FROM pgretention.entity_rule r WHERE r.id = p_rule_id;
    v_table := format('%I.%I', v_rule.table_schema, v_rule.table_name);
    v_keys := ARRAY(SELECT w.key FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id AND w.pass = p_pass
                    ORDER BY w.key LIMIT p_limit);
    picked := cardinality(v_keys);
    done := 0;
    IF picked = 0 THEN
        RETURN;
    END IF;
    -- every statement on the owner's tables runs with the owner's rights (sql/core/exec.sql) and
    -- names none of pgretention's tables: what they need of ours comes as values
    v_cond := format('%s <= %L::timestamptz AND %s', pgretention._entity_activity_sql(p_rule_id),
                     p_now - v_rule.period, pgretention._entity_eligible_sql(p_rule_id));
    IF v_rule.parent_column IS NOT NULL AND v_rule.action = 'delete' THEN
        v_cond := v_cond || format(' AND NOT EXISTS (SELECT 1 FROM %s c WHERE c.%I = t.%I)',
                                   v_table, v_rule.parent_column, v_rule.key_column);
    END IF;
    IF v_rule.notice_period IS NOT NULL THEN
        v_cond := v_cond || format(' AND t.%I::text = ANY (%L::text[])', v_rule.key_column,
            ARRAY(SELECT n.key FROM pgretention.entity_notice n WHERE n.rule_id = p_rule_id AND n.key = ANY (v_keys)
                  AND n.first_listed_at <= p_now - v_rule.notice_period));
    END IF;
    BEGIN
        PERFORM pgretention._set_lock_timeout();
        v_ok := ARRAY(SELECT jsonb_array_elements_text(pgretention._as_owner_value(v_table::regclass, format(
            'SELECT pg_catalog.to_jsonb(coalesce(pg_catalog.array_agg(x.k::text), ''{}'')) FROM (SELECT t.%1$I AS k FROM %2$s t'
            ' WHERE t.%1$I = ANY ($1::%3$s[]) AND %4$s FOR UPDATE OF t SKIP LOCKED) x',
            v_rule.key_column, v_table, v_rule.key_type, v_cond), v_keys)));
        done := cardinality(v_ok);
        IF done > 0 THEN
            FOR v_dep IN SELECT value FROM jsonb_array_elements(v_rule.dependants) LOOP
                v_name := pgretention._split_name(v_dep ->> 'table');
                v_n := pgretention._as_owner(format('%I.%I', v_name.schema_name, v_name.table_name)::regclass,
                    format('DELETE FROM %I.%I d WHERE d.%I = ANY ($1::%s[])', v_name.schema_name, v_name.table_name,
                           v_dep ->> 'fk', v_rule.key_type), v_ok);
                v_deps := v_deps || jsonb_build_object(v_dep ->> 'table',
                                                       coalesce((v_deps ->> (v_dep ->> 'table'))::bigint, 0) + v_n);
                v_dep_total := v_dep_total + v_n;
            END LOOP;
            IF v_rule.action = 'delete' THEN
                PERFORM pgretention._as_owner(v_table::regclass,
                    format('DELETE FROM %s t WHERE t.%I = ANY ($1::%s[])', v_table, v_rule.key_column, v_rule.key_type),
                    v_ok);
            ELSE
                -- the hash key is the statement's parameter, never in its text
                PERFORM pgretention._as_owner(v_table::regclass,
                    format('UPDATE %s t SET %s WHERE t.%I = ANY ($1[2:]::%s[])', v_table,
                           pgretention._entity_anonymise_sql(p_rule_id), v_rule.key_column, v_rule.key_type),
                    ARRAY[encode(pgretention._secret_key('entity'), 'hex')] || v_ok);
            END IF;
            DELETE FROM pgretention.entity_notice n WHERE n.rule_id = p_rule_id AND n.key = ANY(v_ok);
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        -- a lock wait timed out (a dependant's rows, a foreign key): the batch is rolled back
        picked := NULL;
        done := NULL;
        RETURN;
    END;
    DELETE FROM pgretention.entity_work w WHERE w.rule_id = p_rule_id AND w.key = ANY(v_ok);
    UPDATE pgretention.entity_work w SET pass = p_pass + 1 WHERE w.rule_id = p_rule_id AND w.key = ANY(v_keys);
    UPDATE pgretention.entity_rule r SET
        rows_deleted = r.rows_deleted + CASE WHEN v_rule.action = 'delete' THEN done ELSE 0 END,
        rows_anonymised = r.rows_anonymised + CASE WHEN v_rule.action = 'anonymise' THEN done ELSE 0 END,
        dependants_deleted = r.dependants_deleted + v_dep_total,
        batches = r.batches + CASE WHEN done > 0 THEN 1 ELSE 0 END,
        last_batch_at = CASE WHEN done > 0 THEN clock_timestamp() ELSE r.last_batch_at END,
        last_run_id = p_run_id, last_error = NULL
    WHERE r.id = p_rule_id;
    IF done > 0 THEN
        PERFORM pgretention._audit('entity.' || v_rule.action, v_table, jsonb_build_object(
            'rule', v_rule.rule_name, 'run_id', p_run_id, 'rows', done, 'dependants', v_deps, 'pass', p_pass,
            'reference_time', p_now,
            'ms', round((extract(epoch FROM clock_timestamp() - v_started) * 1000)::numeric, 1)));
    END IF;
    PERFORM pgretention._set_lock_timeout(v_lock_timeout);
END
$$;

-- A rule's work in the run p_run_id, at the run's reference time (the clock, unless the installing
-- role simulates): these two are what entity_run calls, and the only entity helpers granted to
-- the operator. The rule must be enabled; its period and notice period come from the catalog; an
-- error is recorded in the run and on the rule (last_error), the rule's counts in the run's
-- summary. _entity_prepare and _entity_batch above are granted to no one.
CREATE OR REPLACE FUNCTION pgretention._entity_rule_of_run(p_rule_id int)
RETURNS pgretention.entity_rule
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule pgretention.entity_rule;
BEGIN
    SELECT * INTO v_rule FROM pgretention.entity_rule r WHERE r.id = p_rule_id;
    IF NOT FOUND OR NOT v_rule.enabled THEN
        RAISE EXCEPTION 'entity rule % does not exist or is disabled', coalesce(p_rule_id::text, 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_rule;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._entity_run_error(p_run_id bigint, p_rule pgretention.entity_rule, p_step text,
                                                         p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgretention._job_error(p_run_id, jsonb_build_object('rule', p_rule.rule_name, 'step', p_step, 'error', p_error));
    UPDATE pgretention.entity_rule r SET last_error = p_error, last_run_id = p_run_id WHERE r.id = p_rule.id;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._entity_run_prepare(p_run_id bigint, p_rule_id int,
    OUT due bigint, OUT listed bigint, OUT cancelled bigint, OUT in_notice bigint, OUT failed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    v_rule pgretention.entity_rule := pgretention._entity_rule_of_run(p_rule_id);
BEGIN
    failed := false;
    BEGIN
        SELECT x.due, x.listed, x.cancelled, x.in_notice INTO due, listed, cancelled, in_notice
        FROM pgretention._entity_prepare(p_rule_id, r.reference_time) x;
    EXCEPTION WHEN OTHERS THEN
        due := NULL; listed := NULL; cancelled := NULL; in_notice := NULL;
        failed := true;
        PERFORM pgretention._entity_run_error(p_run_id, v_rule, 'prepare', SQLERRM);
        RETURN;
    END;
    PERFORM pgretention._job_put(p_run_id, ARRAY['rules', v_rule.rule_name], jsonb_build_object(
        'due', due, 'done', 0, 'batches', 0, 'passes', 1, 'listed', listed, 'cancelled', cancelled,
        'in_notice', in_notice));
END
$$;

-- One batch (see _entity_batch) of at most p_limit keys (capped by entity_batch_max).
CREATE OR REPLACE FUNCTION pgretention._entity_run_batch(p_run_id bigint, p_rule_id int, p_pass int, p_limit int,
    OUT picked int, OUT done int, OUT failed boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.job_run := pgretention._job_token(p_run_id);
    v_rule pgretention.entity_rule := pgretention._entity_rule_of_run(p_rule_id);
    v_limit int := least(greatest(coalesce(p_limit, 1), 1), greatest(1, pgretention._setting_value('entity_batch_max')::int));
BEGIN
    failed := false;
    BEGIN
        SELECT x.picked, x.done INTO picked, done
        FROM pgretention._entity_batch(p_rule_id, r.reference_time, greatest(coalesce(p_pass, 0), 0), v_limit, p_run_id) x;
    EXCEPTION WHEN OTHERS THEN
        picked := NULL; done := NULL;
        failed := true;
        PERFORM pgretention._entity_run_error(p_run_id, v_rule, 'batch', SQLERRM);
        RETURN;
    END;
    IF done > 0 THEN
        PERFORM pgretention._job_add(p_run_id, ARRAY['rules', v_rule.rule_name, 'done'], done);
        PERFORM pgretention._job_add(p_run_id, ARRAY['rules', v_rule.rule_name, 'batches'], 1);
        PERFORM pgretention._job_add(p_run_id, '{totals,rows}', done);
    END IF;
    IF picked IS NOT NULL THEN
        PERFORM pgretention._job_put(p_run_id, ARRAY['rules', v_rule.rule_name, 'passes'], to_jsonb(greatest(
            coalesce((SELECT (j.summary #>> ARRAY['rules', v_rule.rule_name, 'passes'])::int
                      FROM pgretention.job_run j WHERE j.id = p_run_id), 1), coalesce(p_pass, 0) + 1)));
    END IF;
END
$$;

-- The next batch size: one batch (its lock hold) should take about p_target_ms. It grows by at
-- most half when a full batch was quick and shrinks whenever one was slow.
CREATE OR REPLACE FUNCTION pgretention._entity_next_limit(p_limit int, p_picked int, p_ms float8, p_target_ms float8,
                                                          p_max int)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_picked >= p_limit OR p_ms > p_target_ms
                THEN greatest(1, least(p_max, (p_limit * least(1.5, p_target_ms / greatest(p_ms, 1.0)))::int))
                ELSE p_limit END
$$;

-- The entry point. A procedure (it commits after every batch), hence SECURITY INVOKER without SET
-- clauses (see "The procedures of pgretention" in run.sql); all privileged work happens in the
-- definer functions above, which take the run's id. Shares the run lock with pgretention.run: the
-- two never run at the same time in one database (the lock is re-entrant, so pgretention.run may
-- call this procedure; the entity run is then a run of its own in job_run).
CREATE OR REPLACE PROCEDURE pgretention.entity_run(
    p_now timestamptz DEFAULT NULL,
    p_rule text DEFAULT NULL,
    p_runner text DEFAULT 'sql')
LANGUAGE plpgsql
AS $$
DECLARE
    v_run bigint;
    v_cfg record;
    v_rule record;
    v_prep record;
    v_batch record;
    v_pass int;
    v_pass_done bigint;
    v_limit int;
    v_attempt int;
    v_sleep float8;
    v_started timestamptz;
    v_t0 timestamptz;
    v_ms float8;
    v_rule_rows bigint;
    v_deferred jsonb := '{}';
    v_gave_up boolean;
    v_end pgretention.job_run;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE NOTICE 'pgretention: this server is a standby; nothing to do (run on the primary)';
        RETURN;
    END IF;
    IF p_rule IS NOT NULL THEN
        PERFORM pgretention._rule(p_rule);
    END IF;
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgretention.run')) THEN
        RAISE NOTICE 'pgretention: another run is active in this database; nothing to do';
        RETURN;
    END IF;
    BEGIN
        v_run := pgretention._job_begin(p_runner, p_now, 'entity', p_rule);
    EXCEPTION WHEN OTHERS THEN  -- refused (a reference time not the clock): the lock is not kept
        PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.run'));
        RAISE;
    END;
    v_cfg := pgretention._job_settings();
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    FOR v_rule IN SELECT * FROM pgretention._entity_run_rules(p_rule) LOOP
        v_prep := pgretention._entity_run_prepare(v_run, v_rule.rule_id);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        CONTINUE WHEN v_prep.failed;
        RAISE NOTICE 'pgretention: rule %: % rows due, % listed for notice, % notices cancelled, % in notice',
            v_rule.rule_name, v_prep.due, v_prep.listed, v_prep.cancelled, v_prep.in_notice;
        v_rule_rows := 0;
        v_limit := pg_catalog.int4smaller(100, v_cfg.batch_max);
        v_gave_up := false;
        v_pass := 0;
        WHILE v_prep.due > 0::bigint AND v_pass < v_cfg.max_passes AND NOT v_gave_up LOOP
            v_pass_done := 0;
            LOOP
                v_attempt := 0;
                v_sleep := 0.01;
                v_started := pg_catalog.clock_timestamp();
                LOOP
                    v_attempt := v_attempt + 1;
                    v_t0 := pg_catalog.clock_timestamp();
                    v_batch := pgretention._entity_run_batch(v_run, v_rule.rule_id, v_pass, v_limit);
                    COMMIT;
                    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
                    v_ms := pgretention._ms_since(v_t0);
                    v_gave_up := v_batch.failed;
                    EXIT WHEN v_gave_up;
                    EXIT WHEN v_batch.picked IS NOT NULL;
                    -- a lock was not granted: the batch rolled back; back off and retry, smaller
                    IF pgretention._waited_enough(v_attempt, v_cfg.retries, v_started, v_cfg.max_wait) THEN
                        v_deferred := pg_catalog.jsonb_set(v_deferred, ARRAY[v_rule.rule_name], '1'::jsonb);
                        v_gave_up := true;
                        RAISE NOTICE 'pgretention: rule %: rows busy after % lock attempts; left for the next run',
                            v_rule.rule_name, v_attempt;
                        EXIT;
                    END IF;
                    PERFORM pg_catalog.pg_sleep(v_sleep);
                    v_sleep := pgretention._pause_next(v_sleep, v_cfg.backoff_max);
                    v_limit := pg_catalog.int4larger(1, v_limit / 2);
                END LOOP;
                EXIT WHEN v_gave_up OR v_batch.picked = 0;
                v_pass_done := v_pass_done + v_batch.done::bigint;
                v_rule_rows := v_rule_rows + v_batch.done::bigint;
                IF v_batch.done > 0 THEN
                    RAISE NOTICE 'pgretention: rule %: % rows in % ms (pass %, % of % due)', v_rule.rule_name,
                        v_batch.done, pg_catalog.round(v_ms::numeric, 1), v_pass, v_rule_rows, v_prep.due;
                END IF;
                v_limit := pgretention._entity_next_limit(v_limit, v_batch.picked, v_ms, v_cfg.target_ms, v_cfg.batch_max);
            END LOOP;
            EXIT WHEN v_pass_done = 0::bigint;
            v_pass := v_pass + 1;
        END LOOP;
    END LOOP;

    v_end := pgretention._job_end(v_run, v_deferred);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.run'));
    RAISE NOTICE 'pgretention: entity run % %: % rows', v_run, v_end.status, v_end.summary #>> '{totals,rows}';
END
$$;
