-- The compliance report: what is promised, how the data stands against it, and what went wrong.
-- One function per section. Findings come from check functions named pgretention.report_check_<name>
-- (one argument, the reference time, and the columns of report_check_tables); report_findings()
-- runs every such function it finds, so an engine adds its checks without touching this file.
-- Sections about catalog tables of other engines (subject requests, holds, entity rules) return
-- nothing while those tables do not exist.

-- An expression giving the absolute time of a managed table's time column, for dynamic SQL.
CREATE OR REPLACE FUNCTION pgretention._report_time_expr(p_column name, p_type text, p_zone text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_type
        WHEN 'timestamptz' THEN format('%I', p_column)
        WHEN 'timestamp' THEN format('(%I AT TIME ZONE %L)', p_column, p_zone)
        ELSE format('(%I::timestamp AT TIME ZONE %L)', p_column, p_zone)
    END
$$;

-- Per managed table and class: the promise (drop_after, worst-case overshoot) and the facts.
-- rows_past_period: rows older than drop_after (expected while within the overshoot);
-- rows_past_overshoot: rows older than drop_after + worst-case overshoot (must be zero).
CREATE OR REPLACE FUNCTION pgretention.report_tables(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (table_name text, class_name text, drop_after interval, anonymise_after interval,
               partition_interval interval, worst_case_overshoot interval, members int, partitions int,
               total_bytes bigint, oldest_row timestamptz, oldest_row_age interval,
               rows_past_period bigint, rows_past_overshoot bigint, expired_partitions int,
               default_rows bigint, expired_default_rows bigint, null_time_rows bigint, pending_ops int)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    s record;
    t pgretention.managed_table;
    c pgretention.retention_class;
BEGIN
    FOR s IN SELECT * FROM pgretention.status(v_now) LOOP
        SELECT m.* INTO t FROM pgretention.managed_table m
        WHERE format('%I.%I', m.table_schema, m.table_name) = s.table_name;
        SELECT k.* INTO c FROM pgretention.retention_class k WHERE k.table_id = t.id AND k.class_name = s.class_name;
        table_name := s.table_name; class_name := s.class_name; drop_after := s.drop_after;
        anonymise_after := s.anonymise_after; partition_interval := s.partition_interval;
        worst_case_overshoot := s.worst_case_overshoot; members := s.members; partitions := s.partitions;
        total_bytes := s.total_bytes; oldest_row := s.oldest_row; oldest_row_age := s.oldest_row_age;
        expired_partitions := s.expired_partitions; default_rows := s.default_rows;
        expired_default_rows := s.expired_default_rows; null_time_rows := s.null_time_rows;
        pending_ops := s.pending_ops;
        rows_past_period := 0; rows_past_overshoot := 0;
        IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NOT NULL THEN
            -- only partitions older than the cutoff are scanned (pruning on the literal)
            -- rows under a legal hold are lawfully kept past their period: not counted
            EXECUTE format('SELECT count(*), count(*) FILTER (WHERE %I < %s) FROM %I.%I t WHERE %I < %s AND %s AND NOT %s',
                           t.time_column,
                           pgretention._typed_literal(v_now - s.drop_after - s.worst_case_overshoot, t.time_type, t.time_zone),
                           c.parent_schema, c.parent_name, t.time_column,
                           pgretention._typed_literal(v_now - s.drop_after, t.time_type, t.time_zone),
                           pgretention._class_filter(t.id, c.class_name),
                           pgretention._hold_predicate(t.table_schema, t.table_name, v_now))
                INTO rows_past_period, rows_past_overshoot;
        END IF;
        RETURN NEXT;
    END LOOP;
END
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
    FOR s IN SELECT x.*, m.id AS table_id FROM pgretention.status(v_now) x
             JOIN pgretention.managed_table m ON format('%I.%I', m.table_schema, m.table_name) = x.table_name LOOP
        SELECT m.* INTO t FROM pgretention.managed_table m WHERE m.id = s.table_id;
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
                               pgretention._report_time_expr(t.time_column, t.time_type, t.time_zone),
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

-- Which optional sections have their catalog tables (other engines install them).
CREATE OR REPLACE FUNCTION pgretention.report_sections()
RETURNS TABLE (section text, available boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.section, to_regclass(s.tbl) IS NOT NULL
    FROM (VALUES ('subject_requests', 'pgretention.subject_request'),
                 ('legal_holds', 'pgretention.legal_hold'),
                 ('entity_rules', 'pgretention.entity_rule'),
                 ('subject_tables', 'pgretention.subject_table')) AS s(section, tbl)
$$;

-- Subject requests: counts per kind and state, and the overdue ones (ids only: no personal data).
CREATE OR REPLACE FUNCTION pgretention.report_subject_requests(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (kind text, open bigint, overdue bigint, fulfilled bigint, oldest_open_due timestamptz,
               overdue_ids bigint[])
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('pgretention.subject_request') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT r.kind, count(*) FILTER (WHERE r.status = ''open''),
                count(*) FILTER (WHERE r.status = ''open'' AND coalesce(r.extended_due_at, r.due_at) < $1),
                count(*) FILTER (WHERE r.status <> ''open''),
                min(coalesce(r.extended_due_at, r.due_at)) FILTER (WHERE r.status = ''open''),
                coalesce(array_agg(r.id ORDER BY r.id) FILTER (
                    WHERE r.status = ''open'' AND coalesce(r.extended_due_at, r.due_at) < $1), ''{}'')
         FROM pgretention.subject_request r GROUP BY r.kind ORDER BY r.kind'
        USING coalesce(p_now, now());
END
$$;

-- Legal holds: active ones and those past their end date but not released.
CREATE OR REPLACE FUNCTION pgretention.report_holds(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (id bigint, reference text, scope text, set_at timestamptz, ends_at timestamptz, past_end boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('pgretention.legal_hold') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT h.id, h.reference,
                CASE WHEN h.subject_kind IS NOT NULL THEN ''subject ('' || h.subject_kind || '')''
                     ELSE coalesce((SELECT format(''%I.%I'', m.table_schema, m.table_name)
                                    FROM pgretention.managed_table m WHERE m.id = h.table_id), ''table'')
                          || coalesce('':'' || h.class_name, '''') END,
                h.set_at, h.ends_at, coalesce(h.ends_at < $1, false)
         FROM pgretention.legal_hold h WHERE h.released_at IS NULL ORDER BY h.id'
        USING coalesce(p_now, now());
END
$$;

-- Entity rules (row-level rules of the entity engine): its status per rule when that function is
-- installed, else the rules as stored. One JSON object per rule.
CREATE OR REPLACE FUNCTION pgretention.report_entity_rules(p_now timestamptz DEFAULT NULL)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('pgretention.entity_rule') IS NULL THEN
        RETURN;
    END IF;
    IF to_regprocedure('pgretention.entity_status(timestamptz)') IS NOT NULL THEN
        RETURN QUERY EXECUTE 'SELECT to_jsonb(s) FROM pgretention.entity_status($1) s' USING coalesce(p_now, now());
    ELSE
        RETURN QUERY EXECUTE 'SELECT to_jsonb(r) - ''anonymise'' FROM pgretention.entity_rule r ORDER BY r.id';
    END IF;
END
$$;

-- Checks ------------------------------------------------------------------------------------
-- severity: 'violation' (a promise is broken or about to be) or 'warning' (needs attention).

CREATE OR REPLACE FUNCTION pgretention.report_check_tables(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pgretention.report_tables(p_now) LOOP
        section := 'tables';
        object := r.table_name || ':' || r.class_name;
        IF r.rows_past_overshoot > 0 THEN
            severity := 'violation'; check_name := 'rows_past_period'; value := r.rows_past_overshoot;
            message := format('%s rows are older than %s + the worst-case overshoot of %s',
                              r.rows_past_overshoot, r.drop_after, r.worst_case_overshoot);
            RETURN NEXT;
        END IF;
        IF r.expired_default_rows > 0 THEN
            severity := 'violation'; check_name := 'expired_default_rows'; value := r.expired_default_rows;
            message := format('%s expired rows sit in the default partition', r.expired_default_rows);
            RETURN NEXT;
        END IF;
        IF r.default_rows - r.expired_default_rows - r.null_time_rows > 0 THEN
            severity := 'warning'; check_name := 'default_rows';
            value := r.default_rows - r.expired_default_rows - r.null_time_rows;
            message := format('%s rows in the default partition (timestamps outside the partitions)', value);
            RETURN NEXT;
        END IF;
        IF r.null_time_rows > 0 THEN
            severity := 'warning'; check_name := 'null_time_rows'; value := r.null_time_rows;
            message := format('%s rows have no timestamp and therefore no age', r.null_time_rows);
            RETURN NEXT;
        END IF;
        IF r.pending_ops > 0 THEN
            severity := 'warning'; check_name := 'pending_ops'; value := r.pending_ops;
            message := format('%s detached partitions wait to be dropped', r.pending_ops);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Failed runs (within a week before p_now) and late runs (no successful run within twice the
-- longest gap of the schedule).
CREATE OR REPLACE FUNCTION pgretention.report_check_jobs(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_gap interval := pgretention._setting_value('schedule_max_gap')::interval;
    v_last timestamptz;
    v_failed bigint;
    v_partial bigint;
    v_msg text;
BEGIN
    IF NOT EXISTS (SELECT FROM pgretention.managed_table) THEN
        RETURN;
    END IF;
    section := 'jobs'; object := 'pgretention.run';
    SELECT max(greatest(j.reference_time, j.started_at)) INTO v_last FROM pgretention.job_run j
    WHERE j.status IN ('ok', 'partial') AND greatest(j.reference_time, j.started_at) <= v_now + interval '1 minute';
    IF v_last IS NULL OR v_last < v_now - 2 * v_gap THEN
        severity := 'violation'; check_name := 'late'; value := extract(epoch FROM v_now - v_last)::bigint;
        message := CASE WHEN v_last IS NULL THEN 'no successful run recorded'
                        ELSE format('last successful run %s ago; the schedule runs at least every %s',
                                    date_trunc('second', v_now - v_last), v_gap) END;
        RETURN NEXT;
    END IF;
    SELECT count(*) FILTER (WHERE j.status = 'failed'), count(*) FILTER (WHERE j.status = 'partial'),
           (array_agg(j.message ORDER BY j.id DESC) FILTER (WHERE j.status = 'failed'))[1]
      INTO v_failed, v_partial, v_msg
      FROM pgretention.job_run j
     WHERE j.reference_time > v_now - interval '7 days' AND j.reference_time <= v_now + interval '1 minute';
    IF v_failed > 0 THEN
        severity := 'violation'; check_name := 'failed_runs'; value := v_failed;
        message := format('%s failed runs in the last 7 days (last error: %s)', v_failed, coalesce(v_msg, '-'));
        RETURN NEXT;
    END IF;
    IF v_partial > 0 THEN
        severity := 'warning'; check_name := 'partial_runs'; value := v_partial;
        message := format('%s runs in the last 7 days left partitions for the next run (lock waits)', v_partial);
        RETURN NEXT;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.report_check_audit(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v record;
BEGIN
    SELECT * INTO v FROM pgretention.verify_audit();
    IF NOT v.ok THEN
        RETURN QUERY SELECT 'audit'::text, 'violation'::text, 'pgretention.audit_log'::text, 'chain'::text,
            format('audit chain broken at record %s: %s', v.first_broken_id, v.reason), v.first_broken_id;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.report_check_subject_requests(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'subject_requests', 'violation', r.kind || ' requests', 'overdue',
           format('%s %s requests are overdue (ids %s)', r.overdue, r.kind, array_to_string(r.overdue_ids, ', ')),
           r.overdue
    FROM pgretention.report_subject_requests(p_now) r WHERE r.overdue > 0
$$;

CREATE OR REPLACE FUNCTION pgretention.report_check_holds(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'legal_holds', 'violation', 'hold ' || h.id, 'past_end',
           format('legal hold %s (%s) ended %s but is not released: data is kept past its period',
                  h.id, h.reference, h.ends_at), h.id
    FROM pgretention.report_holds(p_now) h WHERE h.past_end
$$;

-- Entity rules whose last batch failed, and rows past a rule's period still waiting.
CREATE OR REPLACE FUNCTION pgretention.report_check_entity_rules(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb;
BEGIN
    FOR r IN SELECT * FROM pgretention.report_entity_rules(p_now) LOOP
        section := 'entity_rules';
        object := coalesce(r ->> 'rule_name', '?') || ' (' || coalesce(r ->> 'table_name', '?') || ')';
        IF r ->> 'last_error' IS NOT NULL THEN
            severity := 'violation'; check_name := 'failed'; value := NULL;
            message := format('the last batch of rule %s failed: %s', r ->> 'rule_name', r ->> 'last_error');
            RETURN NEXT;
        END IF;
        -- rows past the period that nothing keeps (no live descendant, notice served): the next run
        -- removes them; rows kept by a live sub-account or still in notice are rightly kept
        SELECT p.rows_due INTO value FROM pgretention.entity_plan(p_now, r ->> 'rule_name') p LIMIT 1;
        IF coalesce(value, 0) > 0 THEN
            severity := 'warning'; check_name := 'rows_past_period';
            message := format('%s rows are past the rule''s period of %s and due for removal at the next run',
                              value, r ->> 'period');
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Columns without an anonymisation rule: of managed tables with a class that anonymises
-- (anonymise_after) when the anonymiser is installed (method 'keep' is an explicit rule), and
-- identifier columns of subject tables erased by anonymisation.
CREATE OR REPLACE FUNCTION pgretention.report_check_anonymisation(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('pgretention.anon_rule') IS NOT NULL THEN
        RETURN QUERY EXECUTE $q$
            SELECT 'anonymisation'::text, 'warning'::text, format('%I.%I', m.table_schema, m.table_name),
                   'column_without_rule'::text,
                   format('column %I has no anonymisation rule: it is kept as it is when class %s anonymises after %s',
                          a.attname, c.class_name, c.anonymise_after),
                   1::bigint
            FROM pgretention.managed_table m
            JOIN LATERAL (SELECT k.class_name, k.anonymise_after FROM pgretention.retention_class k
                          WHERE k.table_id = m.id AND k.anonymise_after IS NOT NULL
                          ORDER BY k.anonymise_after, k.class_name LIMIT 1) c ON true
            JOIN pg_attribute a ON a.attrelid = to_regclass(format('%I.%I', m.table_schema, m.table_name))
                               AND a.attnum > 0 AND NOT a.attisdropped
            WHERE a.attname NOT IN (m.time_column, coalesce(m.class_column, ''))
              AND NOT EXISTS (SELECT FROM pgretention.anon_rule r WHERE r.table_id = m.id AND r.column_name = a.attname)
            ORDER BY 3, a.attnum $q$;
    END IF;
    IF to_regclass('pgretention.subject_table') IS NOT NULL AND to_regclass('pgretention.subject_column') IS NOT NULL THEN
        RETURN QUERY EXECUTE $q$
            SELECT 'anonymisation'::text, 'warning'::text, format('%I.%I', t.table_schema, t.table_name),
                   'column_without_rule'::text,
                   format('column %I holds %s identifiers and has no anonymisation rule for erasure',
                          c.column_name, c.kind),
                   1::bigint
            FROM pgretention.subject_table t JOIN pgretention.subject_column c ON c.table_id = t.id
            WHERE t.erasure = 'anonymise' AND NOT (t.anonymise ? c.column_name::text)
            ORDER BY 3, c.column_name $q$;
    END IF;
END
$$;

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
