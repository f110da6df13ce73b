-- The partitions of a class: its leaves with absolute bounds, the expired ones, and premaking the
-- ones ahead. What a run does with them: purge.sql; the order of its steps: run.sql.

-- Leaf partitions of a class with absolute bounds (one of them only, when p_only is given).
-- Bounds are converted inline (no function call per partition): classes have hundreds of them.
CREATE OR REPLACE FUNCTION pgretention._leaves_of(p_table_id int, p_class text, p_only regclass)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, is_default boolean,
               range_from text, range_to text, lower_abs timestamptz, upper_abs timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_parent regclass;
BEGIN
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    v_parent := to_regclass(format('%I.%I', c.parent_schema, c.parent_name));
    IF v_parent IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT x.oid, x.nspname, x.relname, x.is_default, x.f, x.u,
           CASE t.time_type
               WHEN 'timestamptz' THEN x.f::timestamptz
               WHEN 'timestamp' THEN x.f::timestamp AT TIME ZONE t.time_zone
               WHEN 'date' THEN x.f::date::timestamp AT TIME ZONE t.time_zone
               WHEN 'epoch' THEN CASE WHEN x.f::numeric < -210866803200 THEN '-infinity'::timestamptz
                                      ELSE to_timestamp(x.f::float8) END
           END,
           CASE t.time_type
               WHEN 'timestamptz' THEN x.u::timestamptz
               WHEN 'timestamp' THEN x.u::timestamp AT TIME ZONE t.time_zone
               WHEN 'date' THEN x.u::date::timestamp AT TIME ZONE t.time_zone
               WHEN 'epoch' THEN CASE WHEN x.u::numeric < -210866803200 THEN '-infinity'::timestamptz
                                      ELSE to_timestamp(x.u::float8) END
           END
    FROM (SELECT k.oid::regclass AS oid, n.nspname, k.relname, b.bound = 'DEFAULT' AS is_default, m[1] AS f, m[2] AS u
          FROM pg_inherits i
          JOIN pg_class k ON k.oid = i.inhrelid
          JOIN pg_namespace n ON n.oid = k.relnamespace
          CROSS JOIN LATERAL (SELECT pg_get_expr(k.relpartbound, k.oid) AS bound) b
          LEFT JOIN LATERAL regexp_match(b.bound, '^FOR VALUES FROM \(''([^'']*)''\) TO \(''([^'']*)''\)$') m ON true
          WHERE i.inhparent = v_parent AND NOT i.inhdetachpending AND (p_only IS NULL OR i.inhrelid = p_only)) x
    ORDER BY 7 NULLS FIRST;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._leaves(p_table_id int, p_class text)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, is_default boolean,
               range_from text, range_to text, lower_abs timestamptz, upper_abs timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgretention._leaves_of(p_table_id, p_class, NULL) $$;

-- Partitions of a class whose every row is past drop_after at p_now (only p_only, when given), and
-- which no table or class hold keeps: what a run detaches, and what _detach_leaf checks again
-- before it detaches one.
CREATE OR REPLACE FUNCTION pgretention._expired_leaves_of(p_table_id int, p_class text, p_now timestamptz,
                                                          p_only regclass)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, range_from text, range_to text,
               rows_estimate bigint, bytes bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
    SELECT l.leaf, l.leaf_schema, l.leaf_name, l.range_from, l.range_to,
           greatest(k.reltuples, 0)::bigint, pg_total_relation_size(l.leaf)
    FROM pgretention.retention_class c
    CROSS JOIN LATERAL (SELECT pgretention._leaf_drop_after(p_table_id, p_class) AS drop_after) a
    CROSS JOIN LATERAL pgretention._leaves_of(c.table_id, c.class_name, p_only) l
    JOIN pg_class k ON k.oid = l.leaf
    WHERE c.table_id = p_table_id AND c.class_name = p_class AND pgretention._owns_leaves(p_table_id, p_class)
      AND isfinite(p_now)
      AND NOT l.is_default AND l.upper_abs IS NOT NULL
      AND l.upper_abs <= p_now - a.drop_after
      -- a table or class hold keeps the whole partition (time-first layout: a hold of any class)
      AND NOT EXISTS (SELECT FROM pgretention.retention_class h
                      WHERE h.table_id = p_table_id
                        AND (h.class_name = p_class OR h.class_name <> p_class AND
                             (SELECT m.layout FROM pgretention.managed_table m WHERE m.id = p_table_id) = 'time')
                        AND pgretention._leaf_held(h.table_id, h.class_name, l.lower_abs, l.upper_abs, p_now))
      AND NOT EXISTS (SELECT FROM pgretention.partition_op o  -- already detached, pending finish
                      WHERE o.partition_schema = l.leaf_schema AND o.partition_name = l.leaf_name
                        AND o.state = 'detached')
    ORDER BY l.upper_abs
$$;

CREATE OR REPLACE FUNCTION pgretention._expired_leaves(p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, range_from text, range_to text,
               rows_estimate bigint, bytes bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgretention._expired_leaves_of(p_table_id, p_class, p_now, NULL) $$;

-- Values routed to p_class whose assigned class keeps them longer than p_class does.
CREATE OR REPLACE FUNCTION pgretention._longer_members(p_table_id int, p_class text)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(m.value ORDER BY m.value), '{}')
    FROM pgretention.class_member m
    JOIN pgretention.retention_class a ON a.table_id = m.table_id AND a.class_name = m.class_name
    JOIN pgretention.retention_class r ON r.table_id = m.table_id AND r.class_name = m.routed_class
    WHERE m.table_id = p_table_id AND m.routed_class = p_class AND a.drop_after > r.drop_after
$$;

-- Make sure partitions exist from the one holding p_now up to premake intervals ahead
-- (pg_partman creates them). New partitions continue the grid of the existing ones (their upper
-- bounds), so boundaries stay aligned. Returns the number created, or NULL when a lock was not
-- granted in time. p_now is the run's reference time (the clock, unless the installing role
-- simulates); it must be a point in time, and both loops over the grid are bounded.
CREATE OR REPLACE FUNCTION pgretention._premake(p_table_id int, p_class text, p_now timestamptz)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_times timestamptz[] := '{}';
    v_time timestamptz;
    v_local boolean;
    v_now timestamp;     -- p_now as wall-clock time of the partition grid (UTC for timestamptz)
    v_grid timestamp;
    v_until timestamp;
    v_last text;
    v_bounds tstzrange[];
    v_before int;
    v_after int;
    v_steps int := 0;
BEGIN
    IF p_now IS NULL OR NOT isfinite(p_now) THEN
        RAISE EXCEPTION 'premake needs a point in time, not %', coalesce(p_now::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := pgretention._table(p_table_id);
    c := pgretention._class(p_table_id, p_class);
    IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL
       OR NOT pgretention._owns_leaves(p_table_id, p_class) THEN
        RETURN 0;
    END IF;
    v_local := t.time_type NOT IN ('timestamptz');
    v_now := CASE WHEN v_local THEN p_now AT TIME ZONE t.time_zone ELSE p_now AT TIME ZONE 'UTC' END;
    v_until := v_now + t.partition_interval * t.premake;
    v_bounds := ARRAY(SELECT tstzrange(l.lower_abs, l.upper_abs) FROM pgretention._leaves(p_table_id, p_class) l
                      WHERE NOT l.is_default AND l.lower_abs IS NOT NULL AND l.upper_abs IS NOT NULL);
    SELECT l.range_to INTO v_last FROM pgretention._leaves(p_table_id, p_class) l
    WHERE NOT l.is_default AND l.upper_abs IS NOT NULL AND l.range_to <> 'infinity' ORDER BY l.upper_abs DESC LIMIT 1;
    IF v_last IS NULL THEN
        v_grid := date_trunc(CASE WHEN t.partition_interval >= interval '28 days' THEN 'month'
                                  WHEN t.partition_interval >= interval '7 days' THEN 'week'
                                  WHEN t.partition_interval >= interval '1 day' THEN 'day' ELSE 'hour' END, v_now);
    ELSIF t.time_type = 'timestamptz' THEN
        v_grid := v_last::timestamptz AT TIME ZONE 'UTC';
    ELSIF t.time_type = 'epoch' THEN
        v_grid := to_timestamp(v_last::double precision) AT TIME ZONE 'UTC';
    ELSE
        v_grid := v_last::timestamp;
    END IF;
    -- skip ahead over ranges that lie wholly in the past (a long pause, or a simulation)
    WHILE v_grid + t.partition_interval <= v_now AND v_steps < 1000000 LOOP
        v_grid := v_grid + t.partition_interval;
        v_steps := v_steps + 1;
    END LOOP;
    IF v_grid + t.partition_interval <= v_now THEN
        RAISE EXCEPTION '%.%: the last partition ends more than a million partition intervals before %',
            c.parent_schema, c.parent_name, p_now USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_steps := 0;
    WHILE v_grid <= v_until AND v_steps <= t.premake + 1 LOOP
        v_steps := v_steps + 1;
        IF NOT EXISTS (SELECT FROM unnest(v_bounds) b WHERE b @> pgretention._grid_abs(v_grid, t.time_type, t.time_zone)) THEN
            -- pg_partman reads timestamptz values in UTC (this function's TimeZone): pass the grid point
            v_times := v_times || (v_grid AT TIME ZONE 'UTC');
        END IF;
        v_grid := v_grid + t.partition_interval;
    END LOOP;
    IF cardinality(v_times) = 0 THEN
        RETURN 0;
    END IF;
    SELECT count(*) INTO v_before FROM pg_inherits WHERE inhparent = format('%I.%I', c.parent_schema, c.parent_name)::regclass;
    PERFORM pgretention._set_lock_timeout();
    -- one partition at a time: a row already in the default partition for one of them (a clock
    -- ahead, a typo in a date) keeps that one from being made, not the ones after it (M4)
    FOREACH v_time IN ARRAY v_times LOOP
        BEGIN
            PERFORM pgretention._partman_call('create_partition_time', jsonb_build_object(
                'p_parent_table', format('%s.%s', c.parent_schema, c.parent_name),
                'p_partition_times', jsonb_build_array(v_time),
                'p_analyze', false));
        EXCEPTION
            WHEN lock_not_available THEN
                RETURN NULL;
            WHEN check_violation OR raise_exception THEN
                -- pg_partman re-raises the ATTACH error as its own (P0001), message first
                IF SQLSTATE = '23514' OR SQLERRM LIKE '%would be violated by some row%' THEN
                    RAISE NOTICE 'pgretention: %.%: rows for the partition of % already sit in the default partition; that partition is not made, the others are (%)',
                        c.parent_schema, c.parent_name, v_time, split_part(SQLERRM, E'\n', 1);
                ELSE
                    RAISE;
                END IF;
        END;
    END LOOP;
    SELECT count(*) INTO v_after FROM pg_inherits WHERE inhparent = format('%I.%I', c.parent_schema, c.parent_name)::regclass;
    RETURN v_after - v_before;
END
$$;
