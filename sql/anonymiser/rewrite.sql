-- The anonymiser: per-column rules of a managed table, applied to a whole partition once it passes
-- its class's anonymise_after, by rewriting it into an anonymised copy that is swapped in. Rows are
-- never updated in place for the bulk.
--
-- A rewrite is three short steps, each its own transaction, recorded in pgretention.anon_op:
--   prepare: create the empty copy and a capture trigger on the original partition (bounded lock
--            wait); from then on, late rows for the partition's range go anonymised into the copy;
--   copy:    INSERT ... SELECT the anonymised rows into the copy, build its indexes and a CHECK
--            constraint equal to the partition bounds (so attaching it scans nothing);
--   swap:    detach the original and attach the copy under the original's name (bounded lock wait);
--   finish:  drop the original.
-- A crash at any point leaves either the original or the copy attached, never neither or both,
-- and the next run continues from the recorded state.

-- An operation of the anonymiser, or an error naming it (p_lock: FOR UPDATE).
CREATE OR REPLACE FUNCTION pgretention._anon_operation(p_op bigint, p_lock boolean DEFAULT false)
RETURNS pgretention.anon_op
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row pgretention.anon_op;
BEGIN
    IF p_lock THEN
        SELECT * INTO v_row FROM pgretention.anon_op o WHERE o.id = p_op FOR UPDATE;
    ELSE
        SELECT * INTO v_row FROM pgretention.anon_op o WHERE o.id = p_op;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'anonymisation % does not exist', coalesce(p_op::text, 'NULL') USING ERRCODE = 'undefined_object';
    END IF;
    RETURN v_row;
END
$$;

-- Partitions of a class past anonymise_after (and not yet past drop_after), not done yet, with
-- no row under a legal hold (only p_only, when given).
CREATE OR REPLACE FUNCTION pgretention._anon_due_of(p_table_id int, p_class text, p_now timestamptz, p_only regclass)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, range_from text, range_to text,
               lower_abs timestamptz, upper_abs timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    l record;
    v_held boolean;
BEGIN
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    IF c.anonymise_after IS NULL OR p_now IS NULL OR NOT isfinite(p_now)
       OR NOT EXISTS (SELECT FROM pgretention.anon_rule WHERE table_id = p_table_id) THEN
        RETURN;
    END IF;
    -- time-first layout: each class rewrites the shared partition for its own rows, in turn
    FOR l IN SELECT * FROM pgretention._leaves_of(p_table_id, p_class, p_only) x
             WHERE NOT x.is_default AND x.upper_abs <= p_now - c.anonymise_after AND x.upper_abs > p_now - c.drop_after
               AND NOT EXISTS (SELECT FROM pgretention.anon_op o WHERE o.table_id = p_table_id
                               AND o.class_name = p_class AND o.range_from = x.range_from AND o.state = 'done')
             ORDER BY x.lower_abs LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pgretention.retention_class h
                              WHERE h.table_id = p_table_id AND (h.class_name = p_class OR t.layout = 'time')
                                AND pgretention._leaf_held(p_table_id, h.class_name, l.lower_abs, l.upper_abs, p_now));
        v_held := pgretention._as_owner_value(l.leaf, format('SELECT pg_catalog.to_jsonb(EXISTS (SELECT FROM %s t WHERE %s))',
                       l.leaf, pgretention._hold_predicate(t.table_schema, t.table_name, p_now, true)))::boolean;
        CONTINUE WHEN v_held;
        leaf := l.leaf; leaf_schema := l.leaf_schema; leaf_name := l.leaf_name; range_from := l.range_from;
        range_to := l.range_to; lower_abs := l.lower_abs; upper_abs := l.upper_abs;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._anon_due(p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, range_from text, range_to text,
               lower_abs timestamptz, upper_abs timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgretention._anon_due_of(p_table_id, p_class, p_now, NULL) $$;

-- Trigger on a partition being rewritten: late rows go anonymised into the copy; updates and
-- deletes wait for the rewrite to finish (they are refused meanwhile).
CREATE OR REPLACE FUNCTION pgretention._anon_capture()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
    t pgretention.managed_table;
BEGIN
    o := pgretention._anon_operation(TG_ARGV[0]::bigint);
    t := pgretention._table(o.table_id);
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'partition %.% is being anonymised: % refused, retry after the rewrite',
            o.partition_schema, o.partition_name, TG_OP USING ERRCODE = 'object_in_use';
    END IF;
    -- with the owner's rights (its column types and constraints are its code); the row and the keys
    -- are the statement's parameter
    PERFORM pgretention._as_owner(TG_RELID::regclass, format(
        'INSERT INTO %I.%I SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::%s, ($1[2])::jsonb) t',
        o.partition_schema, o.copy_name,
        pgretention._anon_select_list(o.table_id, '($1[1])::jsonb', NULL, pgretention._class_filter(o.table_id, o.class_name)),
        TG_RELID::regclass),
        ARRAY[pgretention._anon_keys(pgretention._to_abs(o.range_from, t.time_type, t.time_zone),
                                     pgretention._to_abs(o.range_to, t.time_type, t.time_zone))::text, to_jsonb(NEW)::text]);
    RETURN NULL;
END
$$;

-- Step 1: the empty copy and the capture trigger (bounded lock wait on the partition). The
-- partition must be due at p_now (_anon_due_of: past anonymise_after, no row under hold),
-- checked here again whoever listed it; an operation already begun for it is resumed.
-- Returns the operation id, 0 when the partition is not due, or NULL when the lock was not
-- granted in time.
CREATE OR REPLACE FUNCTION pgretention._anon_prepare(p_table_id int, p_class text, p_leaf regclass, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l record;
    v_id bigint;
    v_copy name;
BEGIN
    SELECT * INTO l FROM pgretention._anon_due_of(p_table_id, p_class, p_now, p_leaf) x;
    IF NOT FOUND THEN
        RAISE NOTICE 'pgretention: partition % is not due for anonymisation at %; left as it is', p_leaf, p_now;
        RETURN 0;
    END IF;
    SELECT id INTO v_id FROM pgretention.anon_op WHERE table_id = p_table_id AND class_name = p_class
        AND range_from = l.range_from AND state <> 'done';
    IF FOUND THEN
        RETURN v_id;  -- resumed
    END IF;
    PERFORM pgretention._rollup_leaf(p_table_id, p_class, p_leaf, l.range_from, l.range_to);
    v_copy := (left(l.leaf_name, 50) || '_pgr_anon')::name;
    INSERT INTO pgretention.anon_op (table_id, class_name, partition_schema, partition_name, copy_name, range_from, range_to, state)
    VALUES (p_table_id, p_class, l.leaf_schema, l.leaf_name, v_copy, l.range_from, l.range_to, 'prepared')
    RETURNING id INTO v_id;
    IF pgretention._is_distributed(p_leaf) THEN
        RETURN v_id;  -- Citus has no row triggers here: the copy is made in the swap's transaction
    END IF;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE'
                       ' INCLUDING COMMENTS INCLUDING GENERATED)', l.leaf_schema, v_copy, p_leaf);
        -- the copy is the owner's: its rows are written with the owner's rights
        EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', l.leaf_schema, v_copy,
                       pg_get_userbyid(pgretention._rel_owner(p_leaf)));
        EXECUTE format('CREATE TRIGGER pgr_anon_capture BEFORE INSERT OR UPDATE OR DELETE ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION pgretention._anon_capture(%L)', p_leaf, v_id);
    EXCEPTION WHEN lock_not_available THEN
        -- nothing prepared: no operation either (a retry starts afresh, not from a missing copy)
        DELETE FROM pgretention.anon_op WHERE id = v_id;
        RETURN NULL;
    END;
    RETURN v_id;
END
$$;

-- Step 2: copy the anonymised rows, build the indexes and the bounds constraint. Idempotent.
-- (A Citus partition is copied in the swap's transaction instead: _anon_swap.)
CREATE OR REPLACE FUNCTION pgretention._anon_copy(p_op bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
BEGIN
    o := pgretention._anon_operation(p_op, true);
    IF o.state <> 'prepared' OR o.rows_copied IS NOT NULL
       OR pgretention._is_distributed(format('%I.%I', o.partition_schema, o.partition_name)::regclass) THEN
        RETURN coalesce(o.rows_copied, 0);
    END IF;
    RETURN pgretention._anon_fill(p_op, false);
END
$$;

-- Fill the copy of an operation with the anonymised rows of the original, then its indexes and
-- bounds constraint; records and returns the rows copied. p_pull: read the original through the
-- coordinator (Citus), so that pgretention's functions in the expressions run where they exist.
CREATE OR REPLACE FUNCTION pgretention._anon_fill(p_op bigint, p_pull boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    o pgretention.anon_op;
    t pgretention.managed_table;
    v_orig regclass;
    v_copy text;
    v_src text;
    v_n bigint;
    v_idx record;
    v_keys jsonb;
    v_only text;
BEGIN
    o := pgretention._anon_operation(p_op);
    t := pgretention._table(o.table_id);
    v_orig := format('%I.%I', o.partition_schema, o.partition_name)::regclass;
    v_copy := format('%I.%I', o.partition_schema, o.copy_name);
    v_src := CASE WHEN p_pull THEN format('(SELECT * FROM %s OFFSET 0)', v_orig) ELSE v_orig::text END;
    v_only := pgretention._class_filter(t.id, o.class_name);
    -- the copy's indexes are built after the load: give the sorts room (this transaction only)
    PERFORM set_config('maintenance_work_mem', greatest(pg_size_bytes(current_setting('maintenance_work_mem')),
                                                        512 * 1024 * 1024)::text || 'B', true);
    BEGIN
        PERFORM set_config('log_parameter_max_length', '0', true);  -- keys are parameters: never log them
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    v_keys := pgretention._anon_keys(pgretention._to_abs(o.range_from, t.time_type, t.time_zone),
                                     pgretention._to_abs(o.range_to, t.time_type, t.time_zone));
    IF (SELECT count(*) FROM jsonb_object_keys(v_keys)) = 1 THEN
        -- the whole partition lies in one epoch: one key for every row
        v_n := pgretention._as_owner(v_orig, format('INSERT INTO %s SELECT %s FROM %s t', v_copy,
                   pgretention._anon_select_list(t.id, '($1[1])::jsonb', 'decode($1[2], ''hex'')', v_only), v_src),
            ARRAY[v_keys::text, (SELECT value #>> '{}' FROM jsonb_each(v_keys))]);
    ELSE
        v_n := pgretention._as_owner(v_orig, format('INSERT INTO %s SELECT %s FROM %s t', v_copy,
                   pgretention._anon_select_list(t.id, '($1[1])::jsonb', NULL, v_only), v_src),
            ARRAY[v_keys::text]);
    END IF;
    FOR v_idx IN SELECT i.indisunique, substring(pg_get_indexdef(i.indexrelid) FROM ' USING (.*)$') AS body
                 FROM pg_index i WHERE i.indrelid = v_orig LOOP
        EXECUTE format('CREATE %sINDEX ON %s USING %s', CASE WHEN v_idx.indisunique THEN 'UNIQUE ' ELSE '' END,
                       v_copy, v_idx.body);
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = v_copy::regclass AND conname = 'pgr_bounds') THEN
        -- (a partition rewritten before has it already: LIKE ... INCLUDING CONSTRAINTS)
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT pgr_bounds CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L)',
                       v_copy, t.time_column, t.time_column, o.range_from, t.time_column, o.range_to);
    END IF;
    UPDATE pgretention.anon_op SET rows_copied = v_n WHERE id = p_op;
    RETURN v_n;
END
$$;

-- Step 3: swap (bounded lock wait on the class parent). Returns true when swapped (or already), false
-- when the copy is not made yet, NULL when the lock was not granted.
CREATE OR REPLACE FUNCTION pgretention._anon_swap(p_op bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
    c pgretention.retention_class;
    v_parent text;
    v_old name;
    v_owner name;
    v_dist boolean;
    g record;
BEGIN
    o := pgretention._anon_operation(p_op, true);
    IF o.state <> 'prepared' THEN
        RETURN true;
    END IF;
    c := pgretention._class(o.table_id, o.class_name);
    v_parent := format('%I.%I', c.parent_schema, c.parent_name);
    v_dist := pgretention._is_distributed(format('%I.%I', o.partition_schema, o.partition_name)::regclass);
    IF o.rows_copied IS NULL AND NOT v_dist THEN
        RETURN false;
    END IF;
    v_old := (left(o.partition_name, 50) || '_pgr_orig')::name;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        IF v_dist THEN
            -- Citus: writes to this (old) partition wait while it is copied; the rest of the table
            -- is not locked until the swap below. The copy is distributed like the original,
            -- colocated with the table, so that it can be attached.
            EXECUTE format('LOCK TABLE %I.%I IN SHARE MODE', o.partition_schema, o.partition_name);
            EXECUTE format('DROP TABLE IF EXISTS %I.%I', o.partition_schema, o.copy_name);
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE'
                           ' INCLUDING COMMENTS INCLUDING GENERATED)', o.partition_schema, o.copy_name,
                           o.partition_schema, o.partition_name);
            EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', o.partition_schema, o.copy_name,
                           pg_get_userbyid(pgretention._rel_owner(v_parent::regclass)));
            EXECUTE 'SELECT create_distributed_table($1, $2, colocate_with => $3)'
                USING format('%I.%I', o.partition_schema, o.copy_name),
                      pgretention._distribution_column(v_parent::regclass), v_parent;
            PERFORM pgretention._anon_fill(p_op, true);
        END IF;
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_parent, o.partition_schema, o.partition_name);
        EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', o.partition_schema, o.partition_name, v_old);
        EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', o.partition_schema, o.copy_name, o.partition_name);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)', v_parent,
                       o.partition_schema, o.partition_name, o.range_from, o.range_to);
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    -- same owner and grants as the original
    SELECT pg_get_userbyid(relowner) INTO v_owner FROM pg_class WHERE oid = format('%I.%I', o.partition_schema, v_old)::regclass;
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', o.partition_schema, o.partition_name, v_owner);
    FOR g IN SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
             FROM pg_class k CROSS JOIN LATERAL aclexplode(k.relacl) a
             WHERE k.oid = format('%I.%I', o.partition_schema, v_old)::regclass AND a.grantee <> k.relowner LOOP
        EXECUTE format('GRANT %s ON %I.%I TO %s', g.privilege_type, o.partition_schema, o.partition_name, g.who);
    END LOOP;
    UPDATE pgretention.anon_op SET state = 'swapped', copy_name = v_old WHERE id = p_op;
    RETURN true;
END
$$;

-- Step 4: drop the original (detached; no application waits on it) and audit. Returns true when
-- done, false when the operation is not swapped yet, NULL when the lock was not granted.
CREATE OR REPLACE FUNCTION pgretention._anon_finish(p_op bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
    t pgretention.managed_table;
BEGIN
    o := pgretention._anon_operation(p_op, true);
    IF o.state <> 'swapped' THEN
        RETURN o.state = 'done';
    END IF;
    t := pgretention._table(o.table_id);
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('DROP TABLE IF EXISTS %I.%I', o.partition_schema, o.copy_name);
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    UPDATE pgretention.anon_op SET state = 'done', done_at = clock_timestamp() WHERE id = p_op;
    PERFORM pgretention._audit('partition.anonymise', format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', o.class_name, 'partition', o.partition_name, 'from', o.range_from, 'to', o.range_to,
                           'rows', o.rows_copied,
                           'rules', (SELECT jsonb_object_agg(r.column_name, r.method) FROM pgretention.anon_rule r
                                     WHERE r.table_id = t.id)));
    RETURN true;
END
$$;

-- Operations to continue: every non-done anon_op, oldest first.
CREATE OR REPLACE FUNCTION pgretention._anon_open_ops()
RETURNS SETOF bigint
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT id FROM pgretention.anon_op WHERE state <> 'done' ORDER BY id $$;
