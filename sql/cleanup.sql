-- Routines of an earlier release that this one no longer has (renamed or removed) would stay in an
-- upgraded database: the replay only creates and replaces. Every CREATE OR REPLACE before this file
-- wrote a new version of its pg_proc row in the install transaction, and this function, replaced
-- last, carries the same xmin: a routine of schema pgretention with another xmin was not (re)created
-- by this replay, and is dropped. Kept: members of an extension (pgcrypto lives in this schema) and
-- report_check_* functions, the report's plug-in point for checks of the DBA's own
-- (report/findings.sql). A routine something else depends on makes the install fail, naming it.
-- This file runs after every file that creates routines and before grants.sql: GRANT and REVOKE
-- rewrite pg_proc rows too.
CREATE OR REPLACE FUNCTION pgretention._drop_stale_routines()
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mark text := (SELECT p.xmin::text FROM pg_proc p
                    WHERE p.oid = 'pgretention._drop_stale_routines()'::regprocedure);
    r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS routine, p.prokind FROM pg_proc p
             WHERE p.pronamespace = 'pgretention'::regnamespace AND p.xmin::text <> v_mark
               AND p.proname NOT LIKE 'report\_check\_%'
               AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                                         AND d.deptype = 'e')
             ORDER BY p.oid::regprocedure::text LOOP
        EXECUTE format('DROP %s %s', CASE WHEN r.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.routine);
        RETURN NEXT r.routine::text;
    END LOOP;
END
$$;

SELECT pgretention._drop_stale_routines();
