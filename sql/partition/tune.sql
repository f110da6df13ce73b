-- The partition interval tuner: which interval keeps the retention promise, the number of
-- partitions and the cost of a purge in bounds, for the rate at which a table actually grows.
--
-- For each class and each candidate interval (1 hour, 6 hours, 1 day, 1 week, 1 month):
--   worst-case overshoot  = interval + schedule_max_gap (a row can live one partition and one gap
--                           between runs past its period; docs/partition-engine.md)
--   premake               = enough intervals to cover 2 days of ingest (at least 1)
--   partitions alive      = ceil(drop_after / interval) + premake
--   partition rows, bytes = rows per day x interval (in days), x bytes per row
--   drops per run         = ceil(schedule_max_gap / interval), at least 1
--   drop cost (ms)        = 3 + 0.085 x partitions alive + 0.3 x min(MB, 64) + 250 x GB
--   purge per run (ms)    = drops per run x drop cost
-- The drop cost model is calibrated on the scale benchmark (docs/scale.md: 400 daily partitions,
-- 37.5 ms per dropped partition of 0.3 MB, 61 ms per partition of 45 MB): about 3 ms of catalog
-- work per dropped partition (detach, drop, audit record, two commits), lookups over the class's
-- partitions that grow with their number (0.085 ms per partition), the exact row count of the
-- audit record for partitions up to 64 MB (0.3 ms per MB, cold), and the filesystem freeing the
-- files (ext4 with discard: 0.2 to 0.3 ms per MB, 250 ms per GB taken).
-- The recommendation for a class is the largest candidate whose overshoot stays within the maximum
-- (default 2 days) and which keeps at most 1000 partitions alive; for the table (one interval for
-- all its classes), the smallest of its classes' recommendations, none when a class has none.

-- Observed rate and width per class: the last 3 closed, analyzed time partitions of the class.
CREATE OR REPLACE FUNCTION pgretention._tune_observed(p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (rows_per_day float8, row_bytes float8, partitions int)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
    WITH recent AS (
        SELECT k.reltuples::float8 AS tuples, pg_total_relation_size(l.leaf)::float8 AS bytes,
               extract(epoch FROM l.upper_abs - l.lower_abs)::float8 / 86400 AS days
        FROM pgretention._leaves(p_table_id, p_class) l
        JOIN pg_class k ON k.oid = l.leaf
        WHERE NOT l.is_default AND l.upper_abs <= p_now AND l.lower_abs > '-infinity'
          AND k.reltuples >= 0
        ORDER BY l.upper_abs DESC
        LIMIT 3)
    SELECT CASE WHEN sum(days) > 0 THEN sum(tuples) / sum(days) END,
           CASE WHEN sum(tuples) > 0 THEN sum(bytes) / sum(tuples) END,
           count(*)::int
    FROM recent
$$;

CREATE OR REPLACE FUNCTION pgretention.tune(
    p_table text, p_rows_per_day bigint DEFAULT NULL, p_row_bytes int DEFAULT NULL,
    p_max_overshoot interval DEFAULT NULL)
RETURNS TABLE (
    table_name text, class_name text, drop_after interval, current_interval interval, current_premake int,
    rows_per_day bigint, row_bytes int, rate_source text,
    candidate interval, premake int, worst_case_overshoot interval, partitions_alive int,
    partition_rows bigint, partition_bytes bigint, drops_per_run int, drop_ms_per_partition numeric,
    purge_ms_per_run numeric, fits_overshoot boolean, fits_count boolean,
    recommended boolean, table_choice boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_gap interval := pgretention._setting_value('schedule_max_gap')::interval;
    v_max interval := coalesce(p_max_overshoot, interval '2 days');
    v_now timestamptz := now();
    v_classes int;
    v_total_observed float8;
    c record;
    o record;
    v_rate float8;
    v_width float8;
    v_source text;
    v_cand interval;
    v_iv float8;
    v_row record;
    v_out jsonb := '[]';
    v_best interval;
    v_table_best interval;
    v_unfit boolean := false;
BEGIN
    IF p_rows_per_day IS NOT NULL AND p_rows_per_day < 0 OR p_row_bytes IS NOT NULL AND p_row_bytes <= 0 THEN
        RAISE EXCEPTION 'tune of table %: rows per day must not be negative and row bytes must be positive', v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_max <= interval '0' THEN
        RAISE EXCEPTION 'tune of table %: maximum overshoot must be positive', v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT count(*) INTO v_classes FROM pgretention.retention_class rc WHERE rc.table_id = t.id;
    SELECT sum(x.rows_per_day) INTO v_total_observed
    FROM pgretention.retention_class rc CROSS JOIN LATERAL pgretention._tune_observed(t.id, rc.class_name, v_now) x
    WHERE rc.table_id = t.id;
    FOR c IN SELECT * FROM pgretention.retention_class rc WHERE rc.table_id = t.id ORDER BY rc.class_name LOOP
        SELECT * INTO o FROM pgretention._tune_observed(t.id, c.class_name, v_now);
        IF p_rows_per_day IS NOT NULL THEN
            -- the table's rate, split over its classes as observed (evenly when nothing is observed)
            v_rate := p_rows_per_day * CASE WHEN v_total_observed > 0 THEN coalesce(o.rows_per_day, 0) / v_total_observed
                                            ELSE 1.0 / v_classes END;
            v_source := 'given';
        ELSIF o.partitions > 0 THEN
            v_rate := o.rows_per_day;
            v_source := format('observed (last %s closed partitions)', o.partitions);
        ELSIF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL THEN
            v_rate := 0;  -- a class without members has no partition and no rows yet
            v_source := 'no partition yet';
        ELSE
            RAISE EXCEPTION 'tune of table %: class % has no closed, analyzed partition to observe the row rate from; give the rows per day',
                v_qual, c.class_name USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        v_width := coalesce(p_row_bytes, o.row_bytes);
        IF v_width IS NULL THEN
            IF v_rate > 0 THEN
                RAISE EXCEPTION 'tune of table %: class % has no analyzed rows to observe the row width from; give the row bytes',
                    v_qual, c.class_name USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            v_width := 0;
        END IF;
        IF p_row_bytes IS NOT NULL THEN
            v_source := v_source || ', row bytes given';
        END IF;
        v_best := NULL;
        FOREACH v_cand IN ARRAY ARRAY[interval '1 hour', interval '6 hours', interval '1 day', interval '1 week',
                                      interval '1 month'] LOOP
            v_iv := extract(epoch FROM v_cand)::float8;
            SELECT v_qual AS table_name, c.class_name AS class_name, c.drop_after AS drop_after,
                   t.partition_interval AS current_interval, t.premake AS current_premake,
                   round(v_rate)::bigint AS rows_per_day, round(v_width)::int AS row_bytes, v_source AS rate_source,
                   v_cand AS candidate,
                   greatest(1, ceil(2 * 86400 / v_iv))::int AS premake,
                   v_cand + v_gap AS worst_case_overshoot,
                   (ceil(extract(epoch FROM c.drop_after)::float8 / v_iv) + greatest(1, ceil(2 * 86400 / v_iv)))::int
                       AS partitions_alive,
                   round(v_rate * v_iv / 86400)::bigint AS partition_rows,
                   round(v_rate * v_iv / 86400 * v_width)::bigint AS partition_bytes,
                   greatest(1, ceil(extract(epoch FROM v_gap)::float8 / v_iv))::int AS drops_per_run
            INTO v_row;
            v_out := v_out || jsonb_build_object(
                'table_name', v_row.table_name, 'class_name', v_row.class_name, 'drop_after', v_row.drop_after,
                'current_interval', v_row.current_interval, 'current_premake', v_row.current_premake,
                'rows_per_day', v_row.rows_per_day, 'row_bytes', v_row.row_bytes, 'rate_source', v_row.rate_source,
                'candidate', v_row.candidate, 'premake', v_row.premake,
                'worst_case_overshoot', v_row.worst_case_overshoot, 'partitions_alive', v_row.partitions_alive,
                'partition_rows', v_row.partition_rows, 'partition_bytes', v_row.partition_bytes,
                'drops_per_run', v_row.drops_per_run,
                'drop_ms_per_partition', round((3 + 0.085 * v_row.partitions_alive
                                               + 0.3 * least(v_row.partition_bytes / 1e6, 64)
                                               + 250 * v_row.partition_bytes / 1e9)::numeric, 1),
                'fits_overshoot', v_row.worst_case_overshoot <= v_max,
                'fits_count', v_row.partitions_alive <= 1000);
            IF v_row.worst_case_overshoot <= v_max AND v_row.partitions_alive <= 1000 THEN
                v_best := v_cand;
            END IF;
        END LOOP;
        IF v_best IS NULL THEN
            v_unfit := true;  -- a class no candidate fits: no recommendation for the table
        ELSIF v_table_best IS NULL OR v_best < v_table_best THEN
            v_table_best := v_best;
        END IF;
        v_out := (SELECT jsonb_agg(CASE WHEN e ->> 'class_name' = c.class_name
                                        THEN e || jsonb_build_object('recommended', (e ->> 'candidate')::interval = v_best)
                                        ELSE e END ORDER BY n)
                  FROM jsonb_array_elements(v_out) WITH ORDINALITY AS x(e, n));
    END LOOP;
    IF v_unfit THEN
        v_table_best := NULL;
    END IF;
    RETURN QUERY
    SELECT e ->> 'table_name', e ->> 'class_name', (e ->> 'drop_after')::interval, (e ->> 'current_interval')::interval,
           (e ->> 'current_premake')::int, (e ->> 'rows_per_day')::bigint, (e ->> 'row_bytes')::int, e ->> 'rate_source',
           (e ->> 'candidate')::interval, (e ->> 'premake')::int, (e ->> 'worst_case_overshoot')::interval,
           (e ->> 'partitions_alive')::int, (e ->> 'partition_rows')::bigint, (e ->> 'partition_bytes')::bigint,
           (e ->> 'drops_per_run')::int, (e ->> 'drop_ms_per_partition')::numeric,
           (e ->> 'drops_per_run')::int * (e ->> 'drop_ms_per_partition')::numeric,
           (e ->> 'fits_overshoot')::boolean, (e ->> 'fits_count')::boolean,
           coalesce((e ->> 'recommended')::boolean, false),
           coalesce((e ->> 'candidate')::interval = v_table_best, false)
    FROM jsonb_array_elements(v_out) WITH ORDINALITY AS x(e, n)
    ORDER BY n;
END
$$;

-- Change a managed table's partition interval (and premake) for FUTURE partitions: pgretention's
-- catalog and pg_partman's configuration of every class parent. Existing partitions keep their
-- bounds and expire as before; the next premake continues from the end of each class's last
-- partition in steps of the new interval (pgretention._premake), so nothing overlaps and no time
-- is left without a partition. pg_partman names partitions after their start
-- (part_config.datetime_string): the format is set so that names stay unique at the new interval.
CREATE OR REPLACE FUNCTION pgretention.table_set_interval(
    p_table text, p_interval text, p_premake int DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_interval interval;
    v_premake int;
    v_format text;
    c pgretention.retention_class;
    v_from timestamptz;
    v_classes jsonb := '{}';
    v_n int;
BEGIN
    v_interval := pgretention._parse_interval(format('partition interval of table %s', v_qual), p_interval);
    IF v_interval < interval '1 hour' THEN
        RAISE EXCEPTION 'partition interval % of table % is shorter than 1 hour', p_interval, v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF t.time_type = 'date' AND v_interval < interval '1 day' THEN
        RAISE EXCEPTION 'table % has a date time column: its partitions cannot be shorter than 1 day', v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_premake := coalesce(p_premake, greatest(t.premake,
        ceil(extract(epoch FROM interval '2 days') / extract(epoch FROM v_interval))::int));
    IF v_premake < 1 OR v_premake > 1000 THEN
        RAISE EXCEPTION 'premake of table % must be between 1 and 1000', v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_interval = t.partition_interval AND v_premake = t.premake THEN
        RETURN jsonb_build_object('table', v_qual, 'changed', false, 'interval', v_interval, 'premake', v_premake);
    END IF;
    IF EXISTS (SELECT FROM pgretention.partition_op o WHERE o.table_id = t.id AND o.state = 'detached') THEN
        RAISE EXCEPTION 'table % has partitions detached and not yet dropped: run pgretention first, then change its interval',
            v_qual USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    v_format := CASE WHEN pgretention._partman_major() >= 5
                     THEN CASE WHEN v_interval < interval '1 day' THEN 'YYYYMMDD_HH24MISS' ELSE 'YYYYMMDD' END
                     ELSE CASE WHEN v_interval < interval '1 day' THEN 'YYYY_MM_DD_HH24MI' ELSE 'YYYY_MM_DD' END END;
    FOR c IN SELECT * FROM pgretention.retention_class rc WHERE rc.table_id = t.id ORDER BY rc.class_name FOR UPDATE LOOP
        IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL THEN
            CONTINUE;  -- a class without a partition yet: created with the table's interval when needed
        END IF;
        EXECUTE format('UPDATE %I.part_config SET partition_interval = $1, premake = $2, datetime_string = $3'
                       ' WHERE parent_table = $4', pgretention._partman_schema())
            USING v_interval::text, v_premake, v_format, format('%s.%s', c.parent_schema, c.parent_name);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n <> 1 THEN
            RAISE EXCEPTION 'class % of table %: pg_partman has no configuration for %.%', c.class_name, v_qual,
                c.parent_schema, c.parent_name USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        SELECT max(l.upper_abs) INTO v_from FROM pgretention._leaves(t.id, c.class_name) l WHERE NOT l.is_default;
        v_classes := v_classes || jsonb_build_object(c.class_name, v_from);
    END LOOP;
    UPDATE pgretention.managed_table SET partition_interval = v_interval, premake = v_premake WHERE id = t.id;
    PERFORM pgretention._audit('table.interval', v_qual, jsonb_build_object(
        'old', jsonb_build_object('interval', t.partition_interval, 'premake', t.premake),
        'new', jsonb_build_object('interval', v_interval, 'premake', v_premake),
        'new_interval_from', v_classes));
    RETURN jsonb_build_object('table', v_qual, 'changed', true, 'interval', v_interval, 'premake', v_premake,
                              'old_interval', t.partition_interval, 'old_premake', t.premake,
                              'new_interval_from', v_classes);
END
$$;
