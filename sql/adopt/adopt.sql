-- Online adoption: convert a plain table the application keeps writing to into a managed table
-- partitioned by time, under the same name (docs/adopt.md).
--
--   1. prepare   CHECK (time IS NOT NULL AND time >= '-infinity' AND time < cut-over) NOT VALID
--                (ACCESS EXCLUSIVE for milliseconds, bounded by lock_timeout, retried);
--   2. validate  VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE: inserts and queries go on);
--   3. swap      one short transaction (ACCESS EXCLUSIVE on the table, bounded by lock_timeout,
--                retried): rename the table to <table>_adopted, create the partitioned table under
--                the old name with the same columns, defaults, identity, checks, indexes, triggers,
--                grants, owner, comments, foreign keys and publications, let pg_partman premake
--                partitions from the cut-over on, attach the old table as the historical partition
--                FROM ('-infinity') TO (cut-over) (no scan: the validated CHECK implies the bound),
--                re-point dependent views.
-- The historical partition is then emptied in batches by every run as its rows expire
-- (_adopt_purge_batch) and dropped by the engine like any partition once the cut-over is past
-- drop_after. adopt_undo() gives back a plain table with all rows.
--
-- Files: inspect.sql (cut-over, checks, plan), steps.sql (prepare, validate, abandon, swap), this
-- file (the procedure, the historical partition's purge, undo).

-- Adopt a plain table online. A procedure: each step commits on its own so the application keeps
-- writing (see the top of this file); lock waits are bounded and retried like the run's.
CREATE OR REPLACE PROCEDURE pgretention.adopt(
    p_table text,
    p_time_column text,
    p_drop_after text,
    p_interval text DEFAULT '1 day',
    p_premake int DEFAULT 4,
    p_time_zone text DEFAULT 'UTC',
    p_key text DEFAULT NULL,
    p_class_column text DEFAULT NULL,
    p_now timestamptz DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_cfg record;
    v_id int;
    v_tid int;
    v_sleep float8;
    v_started timestamptz;
    v_attempt int;
    v_err text;
    v_hint text;
    v_state text;
BEGIN
    -- the caller's search_path is pinned in every transaction (see run.sql, "The procedures of pgretention")
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    v_cfg := pgretention._job_settings();
    -- 1. CHECK constraint NOT VALID (brief lock, retried)
    v_attempt := 0; v_sleep := 0.01; v_started := pg_catalog.clock_timestamp();
    LOOP
        v_attempt := v_attempt + 1;
        v_id := pgretention._adopt_prepare(p_table, p_time_column, p_drop_after, p_interval, p_premake, p_time_zone,
                                           p_key, p_class_column, p_now);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        EXIT WHEN v_id IS NOT NULL;
        IF pgretention._waited_enough(v_attempt, v_cfg.retries, v_started, v_cfg.max_wait) THEN
            RAISE EXCEPTION 'table % stayed busy: its lock was not granted in % attempts; nothing changed', p_table, v_attempt
                USING ERRCODE = 'lock_not_available';
        END IF;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := pgretention._pause_next(v_sleep, v_cfg.backoff_max);
    END LOOP;
    -- 2. validate while the application writes
    BEGIN
        PERFORM pgretention._adopt_validate(v_id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT, v_state = RETURNED_SQLSTATE;
    END;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    IF v_err IS NOT NULL THEN
        PERFORM pgretention._adopt_abandon(v_id, v_err);
        COMMIT;
        RAISE EXCEPTION '%; nothing changed', v_err USING ERRCODE = v_state, HINT = coalesce(v_hint, '');
    END IF;
    -- 3. swap (short transaction, retried)
    v_attempt := 0; v_sleep := 0.01; v_started := pg_catalog.clock_timestamp();
    LOOP
        v_attempt := v_attempt + 1;
        BEGIN
            v_tid := pgretention._adopt_swap(v_id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT, v_state = RETURNED_SQLSTATE;
        END;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        EXIT WHEN v_tid IS NOT NULL OR v_err IS NOT NULL;
        IF pgretention._waited_enough(v_attempt, v_cfg.retries, v_started, v_cfg.max_wait) THEN
            v_err := format('table %s stayed busy: its lock was not granted in %s attempts', p_table, v_attempt);
            v_state := '55P03';
            EXIT;
        END IF;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := pgretention._pause_next(v_sleep, v_cfg.backoff_max);
    END LOOP;
    IF v_err IS NOT NULL THEN
        PERFORM pgretention._adopt_abandon(v_id, v_err);
        COMMIT;
        RAISE EXCEPTION '%; nothing changed', v_err USING ERRCODE = v_state, HINT = coalesce(v_hint, '');
    END IF;
    RAISE NOTICE 'pgretention: % adopted (managed table %, historical partition until the cut-over)', p_table, v_tid;
END
$$;

-- One batch of the historical partition's expired rows, deleted; called by every run after the
-- engine's own work for the table. Returns rows deleted (0 when the table has no historical
-- partition), or NULL when the partition was busy. Rows are read in block ranges from where the
-- previous batch stopped, so a run reads the partition once however many batches it takes.
CREATE OR REPLACE FUNCTION pgretention._adopt_purge_batch(
    p_table_id int, p_class text, p_now timestamptz, p_batch int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    d pgretention.adoption;
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_hist regclass;
    v_cutoff timestamptz;
    v_blocks bigint;
    v_from bigint;
    v_step bigint := 1024;
    v_n bigint;
    v_total bigint := 0;
    v_hold text;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE table_id = p_table_id AND state = 'adopted' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    v_hist := to_regclass(format('%I.%I', d.table_schema, d.historical_name));
    IF v_hist IS NULL OR NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = v_hist AND NOT inhdetachpending) THEN
        -- dropped by the engine (its rows all expired): the adoption is complete
        UPDATE pgretention.adoption SET state = 'done', finished_at = now() WHERE id = d.id;
        RETURN 0;
    END IF;
    v_cutoff := p_now - c.drop_after;
    IF d.cutover_at <= v_cutoff THEN
        RETURN 0;  -- all of it expired: the engine drops the whole partition instead
    END IF;
    v_hold := pgretention._hold_predicate(t.table_schema, t.table_name, p_now);
    v_blocks := pg_relation_size(v_hist) / current_setting('block_size')::int;
    v_from := least(d.scan_block, v_blocks);
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        WHILE v_from < v_blocks AND v_total < p_batch LOOP
            -- the owner's rows, with the owner's rights (sql/core/exec.sql)
            v_n := pgretention._as_owner(v_hist, format(
                'DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT t.ctid FROM %s t WHERE t.ctid >= %L::tid'
                ' AND t.ctid < %L::tid AND t.%I < %s AND NOT (%s) LIMIT %s))',
                v_hist, v_hist, format('(%s,0)', v_from), format('(%s,0)', v_from + v_step), t.time_column,
                pgretention._typed_literal(v_cutoff, t.time_type, t.time_zone), v_hold, p_batch - v_total));
            v_total := v_total + v_n;
            IF v_total < p_batch THEN
                v_from := v_from + v_step;  -- this block range has no expired row left
            END IF;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    UPDATE pgretention.adoption SET scan_block = CASE WHEN v_from >= v_blocks THEN 0 ELSE v_from END,
        rows_purged = rows_purged + v_total
    WHERE id = d.id;
    IF v_total > 0 THEN
        PERFORM pgretention._audit('adopt.purge', format('%I.%I', t.table_schema, t.table_name),
            jsonb_build_object('class', p_class, 'partition', d.historical_name, 'rows', v_total));
    END IF;
    RETURN v_total;
END
$$;

-- Give back a plain table under the same name with every row (for a DBA who changes their mind).
-- One transaction holding ACCESS EXCLUSIVE on the table while the rows written since the cut-over
-- are copied into the historical table (the bulk of older rows does not move).
CREATE OR REPLACE FUNCTION pgretention.adopt_undo(p_table text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
    d pgretention.adoption;
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_rel regclass;
    v_hist regclass;
    v_tmp name := left(t.table_name, 52) || '_unadopted';
    v_plain text;
    v_cols text;
    v_triggers text[];
    v_views jsonb;
    v_pubs name[];
    v_stmt text;
    v_moved bigint;
    v_total bigint;
    r record;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE table_id = t.id AND state IN ('adopted', 'done') FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % was not adopted: adopt_undo restores adopted tables only', v_qual
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'table_release stops managing other tables';
    END IF;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_qual);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'table % is busy: its lock was not granted within lock_timeout; nothing changed, retry', v_qual
            USING ERRCODE = 'lock_not_available';
    END;
    PERFORM set_config('lock_timeout', '0', true);
    v_rel := v_qual::regclass;
    v_hist := to_regclass(format('%I.%I', t.table_schema, d.historical_name));
    v_triggers := ARRAY(SELECT pg_get_triggerdef(g.oid) FROM pg_trigger g WHERE g.tgrelid = v_rel AND NOT g.tgisinternal
                        AND g.tgparentid = 0 ORDER BY g.tgname);
    v_views := pgretention._adopt_views(v_rel);
    v_pubs := ARRAY(SELECT p.pubname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                    WHERE pr.prrelid = v_rel ORDER BY p.pubname);
    IF v_hist IS NOT NULL AND EXISTS (SELECT FROM pg_inherits WHERE inhrelid = v_hist AND inhparent = v_rel) THEN
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', v_qual, v_hist);
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_hist, d.constraint_name);
    ELSE
        -- the historical partition is gone: a new plain table like the partitioned one
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING ALL)', t.table_schema, d.historical_name, v_qual);
        v_hist := format('%I.%I', t.table_schema, d.historical_name)::regclass;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', v_hist, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = v_rel));
        FOR r IN SELECT a.privilege_type, a.grantee, a.is_grantable FROM pg_class k, aclexplode(k.relacl) a
                 WHERE k.oid = v_rel AND a.grantee <> k.relowner LOOP
            EXECUTE format('GRANT %s ON %s TO %s%s', r.privilege_type, v_hist,
                           CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,
                           CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        FOR r IN SELECT c.conname, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c
                 WHERE c.conrelid = v_rel AND c.contype = 'f' LOOP
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_hist, r.conname, r.def);
        END LOOP;
        IF obj_description(v_rel, 'pg_class') IS NOT NULL THEN
            EXECUTE format('COMMENT ON TABLE %s IS %L', v_hist, obj_description(v_rel, 'pg_class'));
        END IF;
    END IF;
    -- rows written since the cut-over (and any other partition) into the plain table
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols FROM pg_attribute a
    WHERE a.attrelid = v_rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    -- with the owner's rights: the plain table's defaults, domains and triggers are the owner's code
    v_moved := pgretention._as_owner(v_rel, format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s',
                                                   v_hist, v_cols, v_cols, v_qual));
    -- sequences and identity back to the plain table
    FOR r IN SELECT s.oid::regclass AS seq, a.attname FROM pg_depend dp
             JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
             JOIN pg_attribute a ON a.attrelid = dp.refobjid AND a.attnum = dp.refobjsubid
             WHERE dp.classid = 'pg_class'::regclass AND dp.refobjid = v_rel AND dp.deptype = 'a' LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', r.seq, v_hist, r.attname);
    END LOOP;
    -- the historical partition gave its identity up at adoption (and PostgreSQL 17 drops an inherited one
    -- at detach): the same identity back, with the sequence's options, continuing where it is
    FOR r IN SELECT a.attname, a.attidentity, h.attidentity AS hist_identity, s.*
             FROM pg_attribute a
             JOIN pg_attribute h ON h.attrelid = v_hist AND h.attname = a.attname
             JOIN pg_sequence s ON s.seqrelid = pg_get_serial_sequence(v_qual, a.attname)::regclass
             WHERE a.attrelid = v_rel AND a.attidentity <> '' AND NOT a.attisdropped ORDER BY a.attnum LOOP
        IF r.hist_identity = '' THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I ADD GENERATED %s AS IDENTITY (INCREMENT BY %s MINVALUE %s'
                           ' MAXVALUE %s START WITH %s CACHE %s %s)', v_hist, r.attname,
                           CASE r.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END, r.seqincrement, r.seqmin,
                           r.seqmax, r.seqstart, r.seqcache, CASE WHEN r.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END);
        END IF;
        EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s', pg_get_serial_sequence(v_hist::text, r.attname),
                       pg_get_serial_sequence(v_qual, r.attname)::regclass);
    END LOOP;
    -- names back, then everything that pointed at the name
    PERFORM pgretention._forget_partman(ARRAY(SELECT format('%s.%s', parent_schema, parent_name)
                                              FROM pgretention.retention_class WHERE table_id = t.id));
    EXECUTE format('ALTER TABLE %s RENAME TO %I', v_qual, v_tmp);
    EXECUTE format('ALTER TABLE %s RENAME TO %I', v_hist, t.table_name);
    v_plain := v_qual;
    PERFORM pgretention._adopt_recreate_views(v_views);  -- with their options (security_invoker, ...)
    FOREACH v_stmt IN ARRAY v_triggers LOOP
        EXECUTE v_stmt;  -- server-generated CREATE TRIGGER ... ON <schema>.<table>: now the plain table
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(v_pubs, 1), 0) LOOP
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', v_pubs[i], v_plain);
    END LOOP;
    EXECUTE format('DROP TABLE %I.%I', t.table_schema, v_tmp);
    EXECUTE format('SELECT count(*) FROM %s', v_plain) INTO v_total;
    DELETE FROM pgretention.managed_table WHERE id = t.id;
    UPDATE pgretention.adoption SET state = 'unadopted', finished_at = now() WHERE id = d.id;
    PERFORM pgretention._audit('table.unadopt', v_qual,
        jsonb_build_object('adoption', d.id, 'rows_moved', v_moved, 'rows', v_total));
    RETURN v_total;
END
$$;
