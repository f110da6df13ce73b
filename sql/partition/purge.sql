-- Partition operations of a run: detach an expired partition with a bounded lock wait and finish
-- it (drop or archive), purge expired rows that sit in default partitions, apply a moved member's
-- shorter period, and (time-first layout) delete a class's rows from shared partitions. Each
-- function is one unit of work in one transaction; run() commits between them. A step that needs
-- a lock returns NULL when it was not granted (core/batches.sql).
-- None of them is granted to anyone: a run reaches them through _run_step (run.sql), which takes
-- the run's id and passes the run's reference time. Each decides itself, from the catalog, what is
-- expired at that time and what a hold keeps.

-- Detach one expired partition with a bounded lock wait and record it as pending; nothing else
-- happens while the lock on the parent is held. The partition must be expired at p_now and free of
-- table and class holds (_expired_leaves_of, checked here again whoever listed it). Returns the
-- operation id, 0 when the partition is gone meanwhile or not (or no longer) to be detached, or
-- NULL when the lock was not granted within lock_timeout.
CREATE OR REPLACE FUNCTION pgretention._detach_leaf(
    p_table_id int, p_class text, p_leaf regclass, p_now timestamptz, p_run_id bigint, p_attempts int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    l record;
    v_id bigint;
BEGIN
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    SELECT * INTO l FROM pgretention._leaves_of(p_table_id, p_class, p_leaf) x;
    IF NOT FOUND THEN
        RETURN 0;  -- gone meanwhile
    END IF;
    IF NOT EXISTS (SELECT FROM pgretention._expired_leaves_of(p_table_id, p_class, p_now, p_leaf)) THEN
        RAISE NOTICE 'pgretention: partition % of %.% is not expired at % or is under a legal hold; kept',
            l.leaf_name, t.table_schema, t.table_name, p_now;
        RETURN 0;
    END IF;
    -- roll-ups are written before the raw data goes (idempotent; outside the parent's lock); in
    -- the time-first layout, of every class still in the partition (those kept the longest)
    PERFORM pgretention._rollup_leaf(p_table_id, k.class_name, p_leaf, l.range_from, l.range_to)
    FROM pgretention.retention_class k
    WHERE k.table_id = p_table_id AND (k.class_name = p_class OR t.layout = 'time'
                                       AND k.drop_after = pgretention._leaf_drop_after(p_table_id, p_class));
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('ALTER TABLE %I.%I DETACH PARTITION %s', c.parent_schema, c.parent_name, p_leaf);
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    INSERT INTO pgretention.partition_op (table_id, class_name, partition_schema, partition_name, range_from,
        range_to, op, state, rows_estimate, bytes, rows_rescued, lock_attempts, run_id)
    SELECT p_table_id, p_class, l.leaf_schema, l.leaf_name, l.range_from, l.range_to,
           CASE WHEN t.on_expiry = 'archive' THEN 'archive' ELSE 'drop' END, 'detached',
           greatest(k.reltuples, 0)::bigint, pg_total_relation_size(p_leaf), 0, p_attempts, p_run_id
    FROM pg_class k WHERE k.oid = p_leaf
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Finish a detached partition, in one transaction: rows of members moved to a longer class go
-- back into the class's default partition, rows under legal hold are copied to the hold store,
-- then the partition is dropped (or moved to the archive schema) and audited. The detached table
-- is no longer part of the live table: nothing here holds a lock an application waits on.
-- Returns true (finished, or nothing left to finish), or NULL when the lock was not granted in
-- time (a report still reading the detached partition).
CREATE OR REPLACE FUNCTION pgretention._finish_op(p_op_id bigint, p_now timestamptz DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.partition_op;
    t pgretention.managed_table;
    v_rel regclass;
    v_rows bigint;
    v_counted boolean := false;
    v_keep text[];
    v_rescued bigint := 0;
    v_held bigint := 0;
    c pgretention.retention_class;
BEGIN
    SELECT * INTO o FROM pgretention.partition_op WHERE id = p_op_id AND state = 'detached' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    t := pgretention._table(o.table_id);
    v_rel := to_regclass(format('%I.%I', o.partition_schema, o.partition_name));
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        -- the audit record carries the planner's row count (exact after ANALYZE, which autovacuum
        -- runs on every partition it has written); a partition never analyzed is counted when
        -- small. Reading a cold partition only to count it would cost as much as the drop.
        IF v_rel IS NOT NULL AND (SELECT reltuples < 0 FROM pg_class WHERE oid = v_rel)
           AND pg_relation_size(v_rel) <= 8 * 1024 * 1024 THEN
            EXECUTE format('SELECT count(*) FROM %s', v_rel) INTO v_rows;
            v_counted := true;
        END IF;
        IF v_rel IS NOT NULL AND o.op = 'drop' THEN
            v_keep := pgretention._longer_members(o.table_id, o.class_name);
            IF cardinality(v_keep) > 0 THEN
                c := pgretention._class(o.table_id, o.class_name);
                -- rows of the owner's table: with the owner's rights (its triggers fire)
                v_rescued := pgretention._as_owner(format('%I.%I', c.parent_schema, c.parent_name)::regclass,
                    format('INSERT INTO %I.%I SELECT * FROM %s WHERE %I::text = ANY (%L::text[])',
                           c.parent_schema, c.parent_name, v_rel, t.class_column, v_keep));
            END IF;
            v_held := pgretention._keep_held_rows(o.table_id, v_rel, o.partition_name, coalesce(p_now, now()));
        END IF;
        IF v_rel IS NOT NULL THEN
            IF o.op = 'archive' THEN
                EXECUTE format('ALTER TABLE %s SET SCHEMA %I', v_rel, t.archive_schema);
            ELSE
                EXECUTE format('DROP TABLE %s', v_rel);
            END IF;
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    UPDATE pgretention.partition_op SET state = 'done', done_at = clock_timestamp(),
        rows_estimate = coalesce(v_rows, rows_estimate), rows_rescued = v_rescued + v_held
    WHERE id = p_op_id;
    PERFORM pgretention._audit(CASE o.op WHEN 'archive' THEN 'partition.archive' ELSE 'partition.drop' END,
        format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', o.class_name, 'partition', o.partition_name, 'from', o.range_from,
                           'to', o.range_to, 'rows', coalesce(v_rows, o.rows_estimate), 'rows_counted', v_counted,
                           'bytes', o.bytes,
                           'rows_kept_for_longer_class', v_rescued, 'rows_kept_under_hold', v_held,
                           'lock_attempts', o.lock_attempts, 'run_id', o.run_id,
                           'missing', v_rel IS NULL));
    RETURN true;
END
$$;

-- Operations left half-done (detached, not yet dropped) by an earlier run or a crash.
CREATE OR REPLACE FUNCTION pgretention._pending_ops()
RETURNS SETOF bigint
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT id FROM pgretention.partition_op WHERE state = 'detached' ORDER BY id $$;

-- Finish detaches left pending by an interrupted DETACH ... CONCURRENTLY on a managed table. A sweep,
-- not a step: a parent that stays busy is left for the next run; returns the number finished.
CREATE OR REPLACE FUNCTION pgretention._finalize_pending_detach()
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n int := 0;
BEGIN
    PERFORM pgretention._set_lock_timeout();
    FOR r IN SELECT i.inhparent::regclass AS parent, i.inhrelid::regclass AS child
             FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
             JOIN pgretention.retention_class c ON c.parent_schema = pn.nspname AND c.parent_name = p.relname
             WHERE i.inhdetachpending LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s FINALIZE', r.parent, r.child);
            n := n + 1;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;
    RETURN n;
END
$$;

-- The WHERE condition selecting the expired rows of a class's default partition (late rows,
-- out-of-range timestamps). Values moved to another class follow that class's period.
CREATE OR REPLACE FUNCTION pgretention._default_expired_cond(p_table_id int, p_class text, p_now timestamptz)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_cond text;
    v_moved text[];
BEGIN
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    v_cond := format('%I < %s', t.time_column, pgretention._typed_literal(p_now - c.drop_after, t.time_type, t.time_zone));
    IF t.layout = 'time' THEN
        -- one default partition shared by every class: this class's rows, by its period
        v_cond := format('%s AND (%s', pgretention._class_cond(p_table_id, p_class), v_cond);
        IF t.null_time_action = 'purge' THEN
            v_cond := format('%s OR %I IS NULL', v_cond, t.time_column);
        END IF;
        RETURN v_cond || ')';
    END IF;
    IF t.class_column IS NOT NULL THEN
        v_moved := ARRAY(SELECT m.value FROM pgretention.class_member m
                         WHERE m.table_id = p_table_id AND m.routed_class = p_class AND m.class_name <> p_class);
        IF cardinality(v_moved) > 0 THEN
            v_cond := format('(%s AND (%I IS NULL OR NOT %I::text = ANY (%L::text[])))',
                             v_cond, t.class_column, t.class_column, v_moved)
                || (SELECT string_agg(format(' OR (%I::text = %L AND %I < %s)', t.class_column, m.value,
                                             t.time_column,
                                             pgretention._typed_literal(p_now - a.drop_after, t.time_type, t.time_zone)), '')
                    FROM pgretention.class_member m
                    JOIN pgretention.retention_class a ON a.table_id = m.table_id AND a.class_name = m.class_name
                    WHERE m.table_id = p_table_id AND m.routed_class = p_class AND m.class_name <> p_class);
        END IF;
    END IF;
    IF t.null_time_action = 'purge' THEN
        v_cond := format('(%s) OR %I IS NULL', v_cond, t.time_column);
    END IF;
    RETURN v_cond;
END
$$;

-- Delete one batch of expired rows from a class's default partition. Returns rows deleted (below
-- p_batch when none are left), or NULL when the partition was busy.
CREATE OR REPLACE FUNCTION pgretention._purge_default_batch(
    p_table_id int, p_class text, p_now timestamptz, p_batch int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    v_default regclass;
    v_n bigint;
    v_done boolean;
BEGIN
    IF p_now IS NULL OR NOT isfinite(p_now) THEN
        RAISE EXCEPTION 'a purge needs a point in time, not %', coalesce(p_now::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := pgretention._table(p_table_id);
    SELECT l.leaf INTO v_default FROM pgretention._leaves(p_table_id, p_class) l WHERE l.is_default;
    IF v_default IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        SELECT b.rows, b.done INTO v_n, v_done FROM pgretention._delete_batch(v_default,
            format('(%s) AND NOT %s', pgretention._default_expired_cond(p_table_id, p_class, p_now),
                   pgretention._hold_predicate(t.table_schema, t.table_name, p_now)), p_batch) b;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    IF v_n > 0 THEN
        PERFORM pgretention._audit('default.purge', format('%I.%I', t.table_schema, t.table_name),
            jsonb_build_object('class', p_class, 'partition', v_default::text, 'rows', v_n));
    END IF;
    RETURN CASE WHEN v_done THEN least(v_n, p_batch - 1) ELSE v_n END;  -- the caller stops below p_batch
END
$$;

-- Members moved to a class with a shorter period while their rows stayed in the old class's
-- partitions: delete one batch of their rows that are past the new period. Returns rows deleted,
-- or NULL when a partition was busy (the batch is rolled back whole).
CREATE OR REPLACE FUNCTION pgretention._purge_moved_batch(p_table_id int, p_now timestamptz, p_batch int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    m record;
    v_n bigint;
    v_total bigint := 0;
BEGIN
    IF p_now IS NULL OR NOT isfinite(p_now) THEN
        RAISE EXCEPTION 'a purge needs a point in time, not %', coalesce(p_now::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := pgretention._table(p_table_id);
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        FOR m IN SELECT mb.value, mb.class_name, r.parent_schema, r.parent_name, a.drop_after
                 FROM pgretention.class_member mb
                 JOIN pgretention.retention_class a ON a.table_id = mb.table_id AND a.class_name = mb.class_name
                 JOIN pgretention.retention_class r ON r.table_id = mb.table_id AND r.class_name = mb.routed_class
                 WHERE mb.table_id = p_table_id AND a.drop_after < r.drop_after LOOP
            EXIT WHEN v_total >= p_batch;
            v_n := pgretention._as_owner(format('%I.%I', m.parent_schema, m.parent_name)::regclass, format(
                'DELETE FROM %I.%I WHERE (tableoid, ctid) IN (SELECT t.tableoid, t.ctid FROM %I.%I t'
                ' WHERE %I::text = %L AND %I < %s AND NOT %s LIMIT %s)',
                m.parent_schema, m.parent_name, m.parent_schema, m.parent_name, t.class_column, m.value,
                t.time_column, pgretention._typed_literal(p_now - m.drop_after, t.time_type, t.time_zone),
                pgretention._hold_predicate(t.table_schema, t.table_name, p_now), p_batch - v_total));
            IF v_n > 0 THEN
                PERFORM pgretention._audit('member.purge', format('%I.%I', t.table_schema, t.table_name),
                    jsonb_build_object('class', m.class_name,
                                       'value_hash', encode(sha256(convert_to(m.value, 'UTF8')), 'hex'), 'rows', v_n));
            END IF;
            v_total := v_total + v_n;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    RETURN v_total;
END
$$;

-- Time-first layout: partitions past a class's period (but not the table's longest) that still
-- hold rows of that class, oldest first.
CREATE OR REPLACE FUNCTION pgretention._class_purge_due(p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (leaf regclass, leaf_name name, range_from text, range_to text)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
    WITH dropped AS MATERIALIZED (  -- partitions the run drops anyway are left alone
        SELECT e.leaf FROM pgretention.managed_table m
        CROSS JOIN LATERAL pgretention._expired_leaves(m.id, m.default_class, p_now) e
        WHERE m.id = p_table_id AND m.layout = 'time')
    SELECT l.leaf, l.leaf_name, l.range_from, l.range_to
    FROM pgretention.managed_table t
    JOIN pgretention.retention_class c ON c.table_id = t.id AND c.class_name = p_class
    CROSS JOIN LATERAL pgretention._leaves(t.id, p_class) l
    WHERE t.id = p_table_id AND t.layout = 'time'
      AND c.drop_after < pgretention._leaf_drop_after(t.id, p_class)
      AND NOT l.is_default AND l.upper_abs IS NOT NULL AND l.upper_abs <= p_now - c.drop_after
      AND l.leaf NOT IN (SELECT d.leaf FROM dropped d)
      AND NOT EXISTS (SELECT FROM pgretention.class_purge p
                      WHERE p.table_id = t.id AND p.class_name = p_class AND p.range_from = l.range_from AND p.done)
    ORDER BY l.lower_abs
$$;

-- Delete one batch of a class's rows from a shared partition past its period (rows under a legal
-- hold stay). A Citus partition is done in one statement, run in parallel on its shards (no row
-- addresses across nodes). The partition is marked done when only held rows of the class are left.
-- Returns rows deleted (below p_batch when the class is done there), or NULL when the partition
-- was busy (lock_timeout).
CREATE OR REPLACE FUNCTION pgretention._purge_class_leaf(
    p_table_id int, p_class text, p_leaf regclass, p_now timestamptz, p_batch int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    l record;
    v_cond text := pgretention._class_cond(p_table_id, p_class);
    v_hold text;
    v_n bigint;
    v_done boolean;
    v_left boolean := false;
BEGIN
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    SELECT * INTO l FROM pgretention._leaves_of(p_table_id, p_class, p_leaf) x;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- only a shared partition wholly past the class's period (whoever listed it)
    IF t.layout <> 'time' OR l.is_default OR l.upper_abs IS NULL OR NOT isfinite(p_now)
       OR l.upper_abs > p_now - c.drop_after THEN
        RAISE NOTICE 'pgretention: partition % of %.% is not past the period of class % at %; kept',
            l.leaf_name, t.table_schema, t.table_name, p_class, p_now;
        RETURN 0;
    END IF;
    v_hold := pgretention._hold_predicate(t.table_schema, t.table_name, p_now);
    PERFORM pgretention._rollup_leaf(p_table_id, p_class, p_leaf, l.range_from, l.range_to);  -- once
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        SELECT b.rows, b.done INTO v_n, v_done
        FROM pgretention._delete_batch(p_leaf, format('%s AND NOT %s', v_cond, v_hold), p_batch) b;
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    IF v_done AND v_hold <> 'false' THEN
        v_left := pgretention._as_owner_value(p_leaf, format(
            'SELECT pg_catalog.to_jsonb(EXISTS (SELECT FROM %s t WHERE %s AND %s))', p_leaf, v_cond, v_hold))::boolean;
    END IF;
    INSERT INTO pgretention.class_purge AS p (table_id, class_name, range_from, partition_schema, partition_name,
                                             rows_deleted, done)
    VALUES (p_table_id, p_class, l.range_from, l.leaf_schema, l.leaf_name, v_n, v_done AND NOT v_left)
    ON CONFLICT (table_id, class_name, range_from) DO UPDATE
        SET rows_deleted = p.rows_deleted + excluded.rows_deleted, done = excluded.done,
            partition_schema = excluded.partition_schema, partition_name = excluded.partition_name,
            updated_at = clock_timestamp();
    IF v_n > 0 THEN
        PERFORM pgretention._audit('class.purge', format('%I.%I', t.table_schema, t.table_name),
            jsonb_build_object('class', p_class, 'partition', l.leaf_name, 'from', l.range_from, 'to', l.range_to,
                               'rows', v_n));
    END IF;
    RETURN CASE WHEN v_done THEN least(v_n, p_batch - 1) ELSE v_n END;  -- the caller stops below p_batch
END
$$;
