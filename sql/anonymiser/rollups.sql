-- Roll-ups: declarative aggregates of a managed table, written per partition before its raw data
-- is anonymised or dropped. Groups smaller than min_group_size are suppressed (counted, never
-- written), so a roll-up cannot single out a person. Idempotent: one record per partition in
-- pgretention.rollup_done; a partition is never dropped before its roll-ups are written.
--
-- group_by: [{"column": "started_at", "trunc": "day"}, {"column": "tenant"}, {"column": "callee", "prefix": 5}]
-- measures: {"calls": "count", "total_duration": "sum:duration", "longest": "max:duration"}
--
-- Roll-up tables are never purged, so they must not keep what identifies a person: the minimum
-- group size is at least 2, and a column that identifies people (registered as a subject
-- identifier, or with an anonymisation rule other than keep or time_trunc) is never grouped by
-- as it is nor measured (min/max would copy a value); a phone number may be grouped by a prefix no
-- longer than what anonymisation keeps of it (e164_prefix: '+' and 4 digits unless set otherwise),
-- and a column truncated by time_trunc only at that unit or coarser. Rules added later are checked
-- against the existing roll-ups (anon_rule_set, subject_table_register refuse what would break one).

CREATE OR REPLACE FUNCTION pgretention._rollup_parts(p_rollup_id int, OUT groups text[], OUT aliases text[], OUT measures text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.rollup;
    g jsonb;
    v_col text;
    m record;
    v_fn text;
    v_arg text;
BEGIN
    SELECT * INTO r FROM pgretention.rollup WHERE id = p_rollup_id;
    groups := '{}'; aliases := '{}'; measures := '{}';
    FOR g IN SELECT * FROM jsonb_array_elements(r.group_by) LOOP
        v_col := g ->> 'column';
        IF g ? 'trunc' THEN
            groups := groups || format('date_trunc(%L, t.%I)', g ->> 'trunc', v_col);
            aliases := aliases || format('%s_%s', v_col, g ->> 'trunc');
        ELSIF g ? 'prefix' THEN
            groups := groups || format('left(t.%I::text, %s)', v_col, (g ->> 'prefix')::int);
            aliases := aliases || format('%s_prefix', v_col);
        ELSE
            groups := groups || format('t.%I', v_col);
            aliases := aliases || v_col;
        END IF;
    END LOOP;
    FOR m IN SELECT key, value #>> '{}' AS spec FROM jsonb_each(r.measures) ORDER BY key LOOP
        v_fn := split_part(m.spec, ':', 1);
        v_arg := split_part(m.spec, ':', 2);
        measures := measures || CASE WHEN v_fn = 'count' THEN format('count(*) AS %I', m.key)
                                     ELSE format('%s(t.%I) AS %I', v_fn, v_arg, m.key) END;
    END LOOP;
END
$$;

-- Columns of a managed table that identify people, with why, the longest text prefix a roll-up
-- may keep of it (NULL: none) and the coarsest-allowed time unit of a time_trunc rule.
CREATE OR REPLACE FUNCTION pgretention._identifier_columns(p_table_id int)
RETURNS TABLE (column_name name, why text, max_prefix int, time_unit text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sc.column_name, format('it is registered as a %s identifier', sc.kind),
           CASE WHEN sc.kind = 'phone' THEN coalesce((SELECT 1 + coalesce(r.param, '4')::int FROM pgretention.anon_rule r
                                                      WHERE r.table_id = m.id AND r.column_name = sc.column_name
                                                        AND r.method = 'e164_prefix'), 5) END,
           NULL::text
    FROM pgretention.managed_table m
    JOIN pgretention.subject_table st ON st.table_schema = m.table_schema AND st.table_name = m.table_name
    JOIN pgretention.subject_column sc ON sc.table_id = st.id
    WHERE m.id = p_table_id
    UNION ALL
    SELECT r.column_name, format('its anonymisation rule is %s', r.method),
           CASE WHEN r.method = 'e164_prefix' THEN 1 + coalesce(r.param, '4')::int END,
           CASE WHEN r.method = 'time_trunc' THEN r.param END
    FROM pgretention.anon_rule r
    WHERE r.table_id = p_table_id AND r.method <> 'keep'
$$;

-- Refuse a roll-up that would keep what identifies people (see the top of this file).
CREATE OR REPLACE FUNCTION pgretention._rollup_check(
    p_table_id int, p_name text, p_group_by jsonb, p_measures jsonb, p_min_group_size int)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._table(p_table_id);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    g jsonb;
    m record;
    i record;
    v_units text[] := ARRAY['hour', 'day', 'week', 'month'];
BEGIN
    IF p_min_group_size IS NULL OR p_min_group_size < 2 THEN
        RAISE EXCEPTION 'minimum group size of roll-up % of table % must be at least 2: a group of one row is one person''s data',
            p_name, v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR g IN SELECT * FROM jsonb_array_elements(p_group_by) LOOP
        FOR i IN SELECT * FROM pgretention._identifier_columns(p_table_id) x WHERE x.column_name = g ->> 'column' LOOP
            IF i.time_unit IS NOT NULL THEN
                CONTINUE WHEN g ? 'trunc' AND array_position(v_units, g ->> 'trunc') >= array_position(v_units, i.time_unit);
                RAISE EXCEPTION 'roll-up % of table % groups by column % finer than its anonymisation rule (time_trunc %):'
                    ' use "trunc": "%" or coarser', p_name, v_qual, quote_ident(i.column_name), i.time_unit, i.time_unit
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            CONTINUE WHEN i.max_prefix IS NOT NULL AND g ? 'prefix' AND (g ->> 'prefix')::int <= i.max_prefix;
            RAISE EXCEPTION 'roll-up % of table % may not group by column %: % and roll-ups are never purged%',
                p_name, v_qual, quote_ident(i.column_name), i.why,
                CASE WHEN i.max_prefix IS NOT NULL THEN format(' (a "prefix" of at most %s characters is allowed)', i.max_prefix)
                     ELSE '' END
                USING ERRCODE = 'invalid_parameter_value';
        END LOOP;
    END LOOP;
    FOR m IN SELECT key, split_part(value #>> '{}', ':', 2) AS col FROM jsonb_each(p_measures) LOOP
        FOR i IN SELECT * FROM pgretention._identifier_columns(p_table_id) x WHERE x.column_name = m.col LIMIT 1 LOOP
            RAISE EXCEPTION 'roll-up % of table %: measure % may not use column %: % and roll-ups are never purged',
                p_name, v_qual, quote_literal(m.key), quote_ident(i.column_name), i.why
                USING ERRCODE = 'invalid_parameter_value';
        END LOOP;
    END LOOP;
END
$$;

-- Check every roll-up of a managed table again (a new anonymisation rule or subject registration
-- may make a column an identifier).
CREATE OR REPLACE FUNCTION pgretention._rollup_recheck(p_table_id int)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.rollup;
BEGIN
    FOR r IN SELECT * FROM pgretention.rollup x WHERE x.table_id = p_table_id ORDER BY x.name LOOP
        PERFORM pgretention._rollup_check(p_table_id, r.name, r.group_by, r.measures, greatest(r.min_group_size, 2));
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.rollup_add(
    p_table text, p_name text, p_group_by jsonb, p_measures jsonb, p_min_group_size int DEFAULT 5)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_target name;
    v_id int;
    g jsonb;
    m record;
    v_col text;
    p record;
BEGIN
    IF p_name IS NULL OR p_name !~ '^[a-z][a-z0-9_]{0,29}$' THEN
        RAISE EXCEPTION 'invalid roll-up name %: use 1-30 lower-case letters, digits and _', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_name';
    END IF;
    IF p_group_by IS NULL OR jsonb_typeof(p_group_by) <> 'array' OR jsonb_array_length(p_group_by) = 0 THEN
        RAISE EXCEPTION 'group_by of roll-up % must be a non-empty array of {"column": ...}', p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_measures IS NULL OR jsonb_typeof(p_measures) <> 'object' OR p_measures = '{}'::jsonb THEN
        RAISE EXCEPTION 'measures of roll-up % must be an object such as {"calls": "count", "total": "sum:duration"}', p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR g IN SELECT * FROM jsonb_array_elements(p_group_by) LOOP
        v_col := g ->> 'column';
        PERFORM pgretention._column_type(v_qual::regclass, v_col);
        IF g ? 'trunc' AND (g ->> 'trunc') NOT IN ('hour', 'day', 'week', 'month') THEN
            RAISE EXCEPTION 'roll-up %: trunc must be hour, day, week or month', p_name USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF g ? 'prefix' AND (g ->> 'prefix') !~ '^[1-9][0-9]?$' THEN
            RAISE EXCEPTION 'roll-up %: prefix must be 1 to 99 characters', p_name USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    FOR m IN SELECT key, value #>> '{}' AS spec FROM jsonb_each(p_measures) LOOP
        PERFORM pgretention._check_ident('measure', m.key);
        IF m.spec IS NULL OR m.spec !~ '^(count|(sum|min|max|avg):[A-Za-z_][A-Za-z0-9_]*)$' THEN
            RAISE EXCEPTION 'roll-up %: measure % must be count or sum|min|max|avg:column', p_name, quote_literal(m.key)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF m.spec <> 'count' THEN
            PERFORM pgretention._column_type(v_qual::regclass, split_part(m.spec, ':', 2));
        END IF;
    END LOOP;
    PERFORM pgretention._rollup_check(t.id, p_name, p_group_by, p_measures, p_min_group_size);
    v_target := (left(t.table_name, 63 - length(p_name) - 8) || '_rollup_' || p_name)::name;
    IF to_regclass(format('%I.%I', t.table_schema, v_target)) IS NOT NULL THEN
        RAISE EXCEPTION 'roll-up table %.% already exists', t.table_schema, v_target USING ERRCODE = 'duplicate_table';
    END IF;
    INSERT INTO pgretention.rollup (table_id, name, group_by, measures, min_group_size, target_schema, target_name)
    VALUES (t.id, p_name, p_group_by, p_measures, p_min_group_size, t.table_schema, v_target)
    RETURNING id INTO v_id;
    p := pgretention._rollup_parts(v_id);
    EXECUTE format('CREATE TABLE %I.%I AS SELECT NULL::text AS class_name, NULL::text AS period_from, NULL::text AS period_to, %s,'
                   ' %s, count(*) AS group_rows FROM %s t GROUP BY %s WITH NO DATA', t.table_schema, v_target,
                   (SELECT string_agg(format('%s AS %I', x, a), ', ') FROM unnest(p.groups, p.aliases) AS u(x, a)),
                   array_to_string(p.measures, ', '), v_qual, array_to_string(p.groups, ', '));
    -- the roll-up table is the table owner's: groups are written with the owner's rights
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', t.table_schema, v_target,
                   pg_get_userbyid(pgretention._rel_owner(v_qual::regclass)));
    PERFORM pgretention._audit('rollup.add', v_qual, jsonb_build_object('rollup', p_name, 'group_by', p_group_by,
        'measures', p_measures, 'min_group_size', p_min_group_size));
    RETURN format('%I.%I', t.table_schema, v_target);
END
$$;

-- Write every roll-up of the table for one partition, unless already written. Returns groups written.
CREATE OR REPLACE FUNCTION pgretention._rollup_leaf(p_table_id int, p_class text, p_leaf regclass, p_from text, p_to text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.rollup;
    p record;
    v_written bigint;
    v_total bigint := 0;
    v_sup_groups bigint;
    v_sup_rows bigint;
    v_counts jsonb;
BEGIN
    FOR r IN SELECT * FROM pgretention.rollup x WHERE x.table_id = p_table_id
             AND NOT EXISTS (SELECT FROM pgretention.rollup_done d WHERE d.rollup_id = x.id AND d.class_name = p_class
                             AND d.range_from = p_from) LOOP
        p := pgretention._rollup_parts(r.id);
        -- one statement with the owner's rights (sql/core/exec.sql): group the partition's rows,
        -- write the groups large enough, count the suppressed ones (no temporary table: pg_partman
        -- is never called from a session that has one)
        v_counts := pgretention._as_owner_value(p_leaf, format(
            'WITH g AS MATERIALIZED (SELECT %L::text AS class_name, %L::text AS period_from, %L::text AS period_to,'
            ' %s, %s, count(*) AS group_rows FROM %s t WHERE %s GROUP BY %s),'
            ' w AS (INSERT INTO %I.%I SELECT * FROM g WHERE g.group_rows >= %s RETURNING 1)'
            ' SELECT pg_catalog.jsonb_build_array((SELECT count(*) FROM w),'
            ' (SELECT count(*) FROM g WHERE g.group_rows < %s),'
            ' (SELECT coalesce(sum(g.group_rows), 0) FROM g WHERE g.group_rows < %s))',
            p_class, p_from, p_to,
            (SELECT string_agg(format('%s AS %I', x, a), ', ') FROM unnest(p.groups, p.aliases) AS u(x, a)),
            array_to_string(p.measures, ', '), p_leaf, pgretention._class_filter(p_table_id, p_class),
            array_to_string(p.groups, ', '), r.target_schema, r.target_name, greatest(r.min_group_size, 2),
            greatest(r.min_group_size, 2), greatest(r.min_group_size, 2)));
        v_written := (v_counts ->> 0)::bigint;
        v_sup_groups := (v_counts ->> 1)::bigint;
        v_sup_rows := (v_counts ->> 2)::bigint;
        INSERT INTO pgretention.rollup_done (rollup_id, class_name, range_from, range_to, groups, suppressed_groups, suppressed_rows)
        VALUES (r.id, p_class, p_from, p_to, v_written, v_sup_groups, v_sup_rows);
        v_total := v_total + v_written;
    END LOOP;
    RETURN v_total;
END
$$;
