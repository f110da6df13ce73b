-- Read a setting from pgretention.setting; errors name the setting when it is missing.
CREATE OR REPLACE FUNCTION pgretention._setting_value(p_name text)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_value text;
BEGIN
    SELECT s.value INTO v_value FROM pgretention.setting s WHERE s.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgretention setting "%" does not exist', p_name
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_value;
END
$$;

-- Change a setting (admin); validated by type of the current value's use.
CREATE OR REPLACE FUNCTION pgretention.set_setting(p_name text, p_value text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old text;
BEGIN
    SELECT s.value INTO v_old FROM pgretention.setting s WHERE s.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgretention setting "%" does not exist', p_name
            USING ERRCODE = 'undefined_object';
    END IF;
    IF p_value IS NULL THEN
        RAISE EXCEPTION 'setting "%" cannot be NULL', p_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_name IN ('lock_timeout', 'retry_backoff_max', 'max_lock_wait_total', 'job_history_keep', 'schedule_max_gap', 'audit_keep',
                  'entity_batch_target') THEN
        BEGIN
            IF p_value::interval <= interval '0' THEN
                RAISE EXCEPTION 'setting "%" must be a positive interval, got "%"', p_name, p_value
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'setting "%" must be an interval, got "%"', p_name, p_value
                USING ERRCODE = 'invalid_parameter_value';
        END;
    ELSIF p_name = 'allow_future_reference_time' AND p_value NOT IN ('on', 'off') THEN
        RAISE EXCEPTION 'setting "%" must be on or off, got "%"', p_name, p_value
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF p_name IN ('batch_size', 'lock_retries', 'entity_batch_max', 'entity_max_passes') THEN
        IF p_value !~ '^[0-9]{1,9}$' OR p_value::int <= 0 THEN
            RAISE EXCEPTION 'setting "%" must be a positive integer, got "%"', p_name, p_value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    UPDATE pgretention.setting SET value = p_value WHERE name = p_name;
    PERFORM pgretention._audit('setting.change', p_name,
                               jsonb_build_object('old', v_old, 'new', p_value));
END
$$;
