-- The compliance report's findings. A finding comes from a check function named
-- pgretention.report_check_<name> (one argument, the reference time; the columns section,
-- severity, object, check_name, message, value). Each engine keeps its checks next to its code:
--   core/jobs.sql            report_check_jobs            late and failed runs
--   audit/verify.sql         report_check_audit           the audit chain
--   partition/status.sql     report_check_tables          rows past the promise, default rows, broken tables
--   subjects/requests.sql    report_check_subject_requests overdue requests
--   subjects/tables.sql      report_check_subject_tables  registered tables dropped, renamed, broken
--   subjects/holds.sql       report_check_holds           holds past their end
--   anonymiser/rules.sql     report_check_anonymisation   columns without a rule
--   entity/status.sql        report_check_entity_rules    failed batches, rows past the period
-- report_findings() finds them by name rather than by a list here: a DBA (or a site extension) may
-- add a check of their own in the schema without touching pgretention's files, and a new engine's
-- check is reported from the release that adds it. The installer never drops a report_check_*
-- function it did not create (cleanup.sql). One more check, the pg_cron schedule, is made in
-- Python (pgretention/report/collect.py): pg_cron may live in another database.

-- Every finding of every check function (pgretention.report_check_*), violations first. A check
-- that fails does not stop the report: it becomes a warning naming the check and the error.
CREATE OR REPLACE FUNCTION pgretention.report_findings(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_fn name;
    r record;
    v_found jsonb := '[]';
BEGIN
    FOR v_fn IN SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'pgretention' AND p.proname LIKE 'report\_check\_%'
                  AND p.pronargs = 1 AND p.proargtypes[0] = 'timestamptz'::regtype
                ORDER BY p.proname LOOP
        BEGIN
            FOR r IN EXECUTE format('SELECT * FROM pgretention.%I($1)', v_fn) USING v_now LOOP
                v_found := v_found || jsonb_build_object('section', r.section, 'severity', r.severity,
                    'object', r.object, 'check_name', r.check_name, 'message', r.message, 'value', r.value);
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            v_found := v_found || jsonb_build_object('section', 'report', 'severity', 'warning',
                'object', v_fn, 'check_name', 'check_failed', 'message', format('check %s failed: %s', v_fn, SQLERRM),
                'value', NULL);
        END;
    END LOOP;
    RETURN QUERY
    SELECT f ->> 'section', f ->> 'severity', f ->> 'object', f ->> 'check_name', f ->> 'message',
           (f ->> 'value')::bigint
    FROM jsonb_array_elements(v_found) WITH ORDINALITY AS x(f, n)
    ORDER BY f ->> 'severity' <> 'violation', f ->> 'section', f ->> 'object', n;
END
$$;
