-- The compliance report's sections: one function per section, each reading what the engines
-- record (status, the audit log, requests, holds, entity rules). The findings: findings.sql and
-- the report_check_* function of every engine. Metrics views for monitoring: views.sql.

-- Rows of a class older than two cutoffs (the period, the period plus the worst-case overshoot),
-- except rows under a legal hold, which are lawfully kept. Only partitions older than the first
-- cutoff are scanned (pruning on the literal).
CREATE OR REPLACE FUNCTION pgretention._rows_past(p_table_id int, p_class text, p_period timestamptz,
                                                  p_overshoot timestamptz, p_now timestamptz,
                                                  OUT past_period bigint, OUT past_overshoot bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._table(p_table_id);
    c pgretention.retention_class := pgretention._class(p_table_id, p_class);
BEGIN
    past_period := 0;
    past_overshoot := 0;
    IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('SELECT count(*), count(*) FILTER (WHERE %I < %s) FROM %I.%I t WHERE %I < %s AND %s AND NOT %s',
                   t.time_column, pgretention._typed_literal(p_overshoot, t.time_type, t.time_zone),
                   c.parent_schema, c.parent_name,
                   t.time_column, pgretention._typed_literal(p_period, t.time_type, t.time_zone),
                   pgretention._class_filter(t.id, c.class_name),
                   pgretention._hold_predicate(t.table_schema, t.table_name, p_now))
        INTO past_period, past_overshoot;
END
$$;

-- Per managed table and class: the promise (drop_after, worst-case overshoot) and the facts, as
-- status() has them (tables without a problem), with the rows that break the period:
-- rows_past_period: rows older than drop_after (expected while within the overshoot);
-- rows_past_overshoot: rows older than drop_after + worst-case overshoot (must be zero).
CREATE OR REPLACE FUNCTION pgretention.report_tables(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (table_name text, class_name text, drop_after interval, anonymise_after interval,
               partition_interval interval, worst_case_overshoot interval, members int, partitions int,
               total_bytes bigint, oldest_row timestamptz, oldest_row_age interval,
               rows_past_period bigint, rows_past_overshoot bigint, expired_partitions int,
               default_rows bigint, expired_default_rows bigint, null_time_rows bigint, pending_ops int)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
    SELECT s.table_name, s.class_name, s.drop_after, s.anonymise_after, s.partition_interval,
           s.worst_case_overshoot, s.members, s.partitions, s.total_bytes, s.oldest_row, s.oldest_row_age,
           x.past_period, x.past_overshoot, s.expired_partitions, s.default_rows, s.expired_default_rows,
           s.null_time_rows, s.pending_ops
    FROM pgretention.status(coalesce(p_now, now())) WITH ORDINALITY s
    CROSS JOIN LATERAL pgretention._rows_past(s.table_id, s.class_name, coalesce(p_now, now()) - s.drop_after,
                                              coalesce(p_now, now()) - s.drop_after - s.worst_case_overshoot,
                                              coalesce(p_now, now())) x
    WHERE s.problem IS NULL  -- a table retention cannot act on is a finding of its own (report_check_tables)
    ORDER BY s.ordinality
$$;

-- Age distribution of the rows of every class against its retention line: about p_buckets equal
-- age buckets from 0 to a little beyond the larger of (drop_after + overshoot) and the oldest row,
-- sized so that drop_after + overshoot is a bucket boundary (past_overshoot buckets hold only rows
-- that break the promise). Time partitions count exactly up to 16 MB and by the planner's estimate
-- above; their rows are spread over the buckets their time range covers. Default partitions are
-- counted row by row.
CREATE OR REPLACE FUNCTION pgretention.report_age_histogram(p_now timestamptz DEFAULT NULL, p_buckets int DEFAULT 24)
RETURNS TABLE (table_name text, class_name text, bucket int, age_from interval, age_to interval,
               rows bigint, past_period boolean, past_overshoot boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    s record;
    l record;
    t pgretention.managed_table;
    v_max float8;
    v_width float8;
    v_lo float8[];
    v_hi float8[];
    v_n float8[];
    v_count bigint;
    v_default float8[];
    v_b record;
    v_cum float8;
    v_done bigint;
    v_line float8;
    v_k int;
    v_nb int;
    v_filter text;
BEGIN
    IF p_buckets IS NULL OR p_buckets < 2 OR p_buckets > 500 THEN
        RAISE EXCEPTION 'invalid number of histogram buckets %: expected 2 to 500', coalesce(p_buckets::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR s IN SELECT * FROM pgretention.status(v_now) x WHERE x.problem IS NULL LOOP
        t := pgretention._table(s.table_id);
        v_filter := pgretention._class_filter(t.id, s.class_name);
        -- the worst-case line falls on a bucket boundary: buckets beyond it hold only violations
        v_line := extract(epoch FROM s.drop_after + s.worst_case_overshoot);
        v_max := greatest(v_line, coalesce(extract(epoch FROM s.oldest_row_age), 0)) * 1.08;
        v_k := greatest(1, round(p_buckets * v_line / v_max))::int;
        v_width := v_line / v_k;
        v_nb := greatest(v_k + 1, least(500, ceil(v_max / v_width)::int));
        v_lo := '{}'; v_hi := '{}'; v_n := '{}';
        v_default := array_fill(0::float8, ARRAY[v_nb]);
        v_cum := 0;
        v_done := 0;
        FOR l IN SELECT * FROM pgretention._leaves(s.table_id, s.class_name) LOOP
            IF l.is_default THEN
                EXECUTE format('SELECT array_agg(coalesce(n, 0) ORDER BY g) FROM generate_series(0, %s - 1) g'
                               ' LEFT JOIN (SELECT greatest(0, least(%s - 1, floor(extract(epoch FROM %L::timestamptz - %s) / %s)))::int AS b,'
                               ' count(*)::float8 AS n FROM %s WHERE %I IS NOT NULL AND %s GROUP BY 1) y ON y.b = g',
                               v_nb, v_nb, v_now,
                               pgretention._time_expr(t.time_column, t.time_type, t.time_zone),
                               v_width, l.leaf, t.time_column, v_filter)
                    INTO v_default;
                CONTINUE;
            END IF;
            IF v_filter <> 'true' AND EXISTS (SELECT FROM pgretention.class_purge p WHERE p.table_id = t.id
                    AND p.class_name = s.class_name AND p.range_from = l.range_from AND p.done) THEN
                v_count := 0;  -- time-first layout: the class's rows are gone from this partition
            ELSIF pg_relation_size(l.leaf) <= 16 * 1024 * 1024 THEN
                -- small, or distributed (the coordinator's table is empty; Citus counts on the shards)
                EXECUTE format('SELECT count(*) FROM %s WHERE %s', l.leaf, v_filter) INTO v_count;
            ELSIF v_filter <> 'true' THEN
                -- large shared partition: the planner's row count times the class's share in a 1 % sample
                EXECUTE format('SELECT (%s * coalesce(count(*) FILTER (WHERE %s)::float8 / nullif(count(*), 0), 0))::bigint'
                               ' FROM %s TABLESAMPLE SYSTEM (1)',
                               (SELECT greatest(k.reltuples, 0) FROM pg_class k WHERE k.oid = l.leaf), v_filter, l.leaf)
                    INTO v_count;
            ELSE
                SELECT greatest(k.reltuples, 0)::bigint INTO v_count FROM pg_class k WHERE k.oid = l.leaf;
            END IF;
            CONTINUE WHEN v_count = 0;
            v_lo := v_lo || extract(epoch FROM v_now - l.upper_abs)::float8;
            v_hi := v_hi || extract(epoch FROM v_now - l.lower_abs)::float8;
            v_n := v_n || v_count::float8;
        END LOOP;
        FOR v_b IN
            SELECT g AS b,
                   coalesce(sum(p.n * greatest(0, least(p.hi, (g + 1) * v_width) - greatest(p.lo, g * v_width))
                                / nullif(p.hi - p.lo, 0)), 0)
                   -- rows of a partition partly in the future count in the first bucket
                   + CASE WHEN g = 0 THEN coalesce(sum(p.n * greatest(0, least(p.hi, 0) - p.lo) / nullif(p.hi - p.lo, 0)), 0)
                          ELSE 0 END
                   + CASE WHEN g = v_nb - 1
                          THEN coalesce(sum(p.n * greatest(0, p.hi - greatest(p.lo, v_nb * v_width))
                                            / nullif(p.hi - p.lo, 0)), 0)
                          ELSE 0 END AS n
            FROM generate_series(0, v_nb - 1) g
            LEFT JOIN unnest(v_lo, v_hi, v_n) AS p(lo, hi, n) ON true
            GROUP BY g ORDER BY g LOOP
            table_name := s.table_name;
            class_name := s.class_name;
            bucket := v_b.b;
            age_from := make_interval(secs => v_b.b * v_width);
            age_to := make_interval(secs => (v_b.b + 1) * v_width);
            -- cumulative rounding: the buckets add up to the exact total
            v_cum := v_cum + v_b.n + coalesce(v_default[v_b.b + 1], 0);
            rows := round(v_cum)::bigint - v_done;
            v_done := v_done + rows;
            past_period := age_to > s.drop_after;
            past_overshoot := v_b.b >= v_k;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- Destructive actions per day and table over the last p_days (from the audit log).
CREATE OR REPLACE FUNCTION pgretention.report_purges(p_now timestamptz DEFAULT NULL, p_days int DEFAULT 90)
RETURNS TABLE (day date, object text, action text, operations bigint, rows bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
    SELECT a.at::date, coalesce(a.object, ''), a.action, count(*),
           coalesce(sum(CASE WHEN jsonb_typeof(a.details -> 'rows') = 'number'
                             THEN (a.details ->> 'rows')::numeric::bigint END), 0)::bigint
    FROM pgretention.audit_log a
    WHERE a.at >= coalesce(p_now, now()) - make_interval(days => greatest(p_days, 1))
      AND a.action NOT IN ('run', 'audit.checkpoint')
      AND jsonb_typeof(a.details -> 'rows') = 'number'
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
$$;

-- The sections of the report. Every engine is always installed, so every section is available;
-- kept because the Python report (pgretention/report/collect.py) still asks before it reads one.
CREATE OR REPLACE FUNCTION pgretention.report_sections()
RETURNS TABLE (section text, available boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.section, true
    FROM (VALUES ('subject_requests'), ('legal_holds'), ('entity_rules'), ('subject_tables')) AS s(section)
$$;

-- Subject requests: counts per kind and state, and the overdue ones (ids only: no personal data).
CREATE OR REPLACE FUNCTION pgretention.report_subject_requests(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (kind text, open bigint, overdue bigint, fulfilled bigint, oldest_open_due timestamptz,
               overdue_ids bigint[])
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.kind, count(*) FILTER (WHERE r.status = 'open'),
           count(*) FILTER (WHERE r.status = 'open' AND coalesce(r.extended_due_at, r.due_at) < coalesce(p_now, now())),
           count(*) FILTER (WHERE r.status <> 'open'),
           min(coalesce(r.extended_due_at, r.due_at)) FILTER (WHERE r.status = 'open'),
           coalesce(array_agg(r.id ORDER BY r.id) FILTER (
               WHERE r.status = 'open' AND coalesce(r.extended_due_at, r.due_at) < coalesce(p_now, now())), '{}')
    FROM pgretention.subject_request r GROUP BY r.kind ORDER BY r.kind
$$;

-- Legal holds: active ones and those past their end date but not released.
CREATE OR REPLACE FUNCTION pgretention.report_holds(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (id bigint, reference text, scope text, set_at timestamptz, ends_at timestamptz, past_end boolean)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.id, h.reference,
           CASE WHEN h.subject_kind IS NOT NULL THEN 'subject (' || h.subject_kind || ')'
                ELSE coalesce((SELECT format('%I.%I', m.table_schema, m.table_name)
                               FROM pgretention.managed_table m WHERE m.id = h.table_id), 'table')
                     || coalesce(':' || h.class_name, '') END,
           h.set_at, h.ends_at, coalesce(h.ends_at < coalesce(p_now, now()), false)
    FROM pgretention.legal_hold h WHERE h.released_at IS NULL ORDER BY h.id
$$;

-- Entity rules: the entity engine's status per rule, one JSON object per rule.
CREATE OR REPLACE FUNCTION pgretention.report_entity_rules(p_now timestamptz DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_jsonb(s) FROM pgretention.entity_status(coalesce(p_now, now())) s $$;
