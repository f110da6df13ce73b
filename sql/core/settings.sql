-- Settings: every row in one place, each with its kind. The kind says how setting_set validates a
-- new value:
--   interval  a positive interval of at most 200 years (_parse_interval)
--   int       a positive integer of at most 9 digits
--   bool      on or off
--   cron      five cron fields (the CLI and the installer check the schedule fully, with croniter)
--   text      any value (a row this release does not know, left by an earlier one)
-- On upgrade an existing value is never overwritten; kind and description follow this file.
-- (Simulated reference times are not a setting: core/jobs.sql, simulation_enable.)
INSERT INTO pgretention.setting AS s (name, kind, value, description) VALUES
    ('lock_timeout', 'interval', '20ms', 'lock_timeout for each DDL attempt on a live parent table'),
    ('lock_retries', 'int', '3000', 'attempts per partition before it is left for the next run'),
    ('retry_backoff_max', 'interval', '500ms', 'longest pause between two lock attempts (backoff doubles up to this)'),
    ('max_lock_wait_total', 'interval', '10min', 'a run stops retrying a partition after waiting this long in all'),
    ('batch_size', 'int', '5000', 'rows per transaction for row-level work (default partitions, moved members)'),
    ('schedule', 'cron', '7 * * * *', 'pg_cron schedule of the maintenance job (GMT with pg_cron 1.4)'),
    ('schedule_max_gap', 'interval', '1 hour', 'longest gap between two scheduled runs; part of the worst-case overshoot'),
    ('job_history_keep', 'interval', '90 days', 'how long pgretention.job_run rows are kept'),
    ('audit_keep', 'interval', '5 years',
     'retention of the audit log (at least 1 year); older records leave behind a checkpoint record'),
    ('entity_batch_target', 'interval', '50ms',
     'entity runs: target duration of one batch transaction (row locks are held at most about this long)'),
    ('entity_batch_max', 'int', '2000', 'entity runs: most rows of a rule handled in one batch transaction'),
    ('entity_max_passes', 'int', '16', 'entity runs: passes over a rule''s candidates (one hierarchy level per pass)')
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, description = excluded.description
WHERE s.kind IS DISTINCT FROM excluded.kind OR s.description IS DISTINCT FROM excluded.description;

-- A setting's row, or an error naming the setting (p_lock: FOR UPDATE, the caller changes it).
CREATE OR REPLACE FUNCTION pgretention._setting_row(p_name text, p_lock boolean DEFAULT false)
RETURNS pgretention.setting
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.setting;
BEGIN
    IF p_lock THEN
        SELECT * INTO v_row FROM pgretention.setting s WHERE s.name = p_name FOR UPDATE;
    ELSE
        SELECT * INTO v_row FROM pgretention.setting s WHERE s.name = p_name;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgretention setting "%" does not exist', p_name
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_row;
END
$$;

-- A setting's value (as text; the reader casts it to the setting's kind).
CREATE OR REPLACE FUNCTION pgretention._setting_value(p_name text)
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (pgretention._setting_row(p_name)).value $$;

-- A value for a setting of a kind, or an error naming the setting and the kind it needs.
CREATE OR REPLACE FUNCTION pgretention._check_setting(p_name text, p_kind text, p_value text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'setting "%" cannot be NULL', p_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE p_kind
    WHEN 'interval' THEN
        PERFORM pgretention._parse_interval(format('setting %s', p_name), p_value);
    WHEN 'int' THEN
        IF p_value !~ '^[0-9]{1,9}$' OR p_value::int <= 0 THEN
            RAISE EXCEPTION 'setting "%" must be a positive integer, got "%"', p_name, p_value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'bool' THEN
        IF p_value NOT IN ('on', 'off') THEN
            RAISE EXCEPTION 'setting "%" must be on or off, got "%"', p_name, p_value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'cron' THEN
        IF p_value !~ '^\s*[0-9A-Za-z*/,-]+(\s+[0-9A-Za-z*/,-]+){4}\s*$' THEN
            RAISE EXCEPTION 'setting "%" must be a cron schedule of five fields such as ''7 * * * *'', got "%"',
                p_name, p_value USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'text' THEN
        NULL;
    END CASE;
END
$$;

-- Change a setting (admin); the value is validated by the setting's kind, the change audited.
CREATE OR REPLACE FUNCTION pgretention.setting_set(p_name text, p_value text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s pgretention.setting;
BEGIN
    IF p_name = 'allow_future_reference_time' THEN
        RAISE EXCEPTION 'setting "allow_future_reference_time" no longer exists: reference times other than the clock are '
                        'allowed only in a session of the installing role that called pgretention.simulation_enable()'
            USING ERRCODE = 'undefined_object';
    END IF;
    s := pgretention._setting_row(p_name, true);
    PERFORM pgretention._check_setting(p_name, s.kind, p_value);
    UPDATE pgretention.setting SET value = p_value WHERE name = p_name;
    PERFORM pgretention._audit('setting.change', p_name, jsonb_build_object('old', s.value, 'new', p_value));
END
$$;
