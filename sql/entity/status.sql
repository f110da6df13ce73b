-- Entity engine, reporting: status per rule, plan (changes nothing), the notice list per parent
-- (reseller), and immediate cascaded erasure of one row (self-service account deletion).

-- Rows listed for deletion, per parent (reseller): what resellers export to warn their customers.
CREATE OR REPLACE VIEW pgretention.entity_notices AS
SELECT r.rule_name, format('%I.%I', r.table_schema, r.table_name) AS table_name, n.parent_key, n.key,
       n.first_listed_at, n.expires_at,
       greatest(n.expires_at, n.first_listed_at + r.notice_period) AS deletion_from
FROM pgretention.entity_notice n
JOIN pgretention.entity_rule r ON r.id = n.rule_id;

-- Per rule: its definition, rows in the table, rows expired now (before hierarchy and notice
-- checks), exempt rows, rows in notice, what runs did so far.
CREATE OR REPLACE FUNCTION pgretention.entity_status(p_now timestamptz DEFAULT NULL)
RETURNS TABLE (rule_name text, table_name text, action text, period interval, notice_period interval,
               rows_total bigint, rows_expired bigint, rows_exempt bigint, rows_no_activity bigint, in_notice bigint,
               pending bigint, rows_deleted bigint, rows_anonymised bigint, dependants_deleted bigint, batches bigint,
               last_batch_at timestamptz, last_error text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    r pgretention.entity_rule;
BEGIN
    FOR r IN SELECT * FROM pgretention.entity_rule x ORDER BY x.rule_name LOOP
        rule_name := r.rule_name;
        table_name := format('%I.%I', r.table_schema, r.table_name);
        action := r.action;
        period := r.period;
        notice_period := r.notice_period;
        EXECUTE format('SELECT count(*), count(*) FILTER (WHERE x.e AND x.a <= $1), count(*) FILTER (WHERE NOT x.e),'
                       ' count(*) FILTER (WHERE x.e AND x.a IS NULL)'
                       ' FROM (SELECT %s AS a, %s AS e FROM %s t) x',
                       pgretention._entity_activity_sql(r.id), pgretention._entity_eligible_sql(r.id), table_name)
            USING v_now - r.period INTO rows_total, rows_expired, rows_exempt, rows_no_activity;
        in_notice := (SELECT count(*) FROM pgretention.entity_notice n WHERE n.rule_id = r.id);
        pending := (SELECT count(*) FROM pgretention.entity_work w WHERE w.rule_id = r.id);
        rows_deleted := r.rows_deleted;
        rows_anonymised := r.rows_anonymised;
        dependants_deleted := r.dependants_deleted;
        batches := r.batches;
        last_batch_at := r.last_batch_at;
        last_error := r.last_error;
        RETURN NEXT;
    END LOOP;
END
$$;

-- What a run at p_now would do per rule, changing nothing: rows expired and eligible, of these the
-- ones a hierarchy keeps (a child row that is not expired) and the ones still waiting for notice.
CREATE OR REPLACE FUNCTION pgretention.entity_plan(p_now timestamptz DEFAULT NULL, p_rule text DEFAULT NULL)
RETURNS TABLE (rule_name text, table_name text, action text, rows_expired bigint, kept_by_descendants bigint,
               waiting_for_notice bigint, rows_due bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    r pgretention.entity_rule;
    v_table text;
    v_desc text;
BEGIN
    IF p_rule IS NOT NULL THEN
        PERFORM pgretention._rule(p_rule);
    END IF;
    FOR r IN SELECT * FROM pgretention.entity_rule x WHERE p_rule IS NULL OR x.rule_name = p_rule ORDER BY x.rule_name LOOP
        v_table := format('%I.%I', r.table_schema, r.table_name);
        rule_name := r.rule_name;
        table_name := v_table;
        action := r.action;
        -- a row is kept by its descendants when one of them is not expired (or exempt)
        v_desc := 'false';
        IF r.parent_column IS NOT NULL THEN
            v_desc := format(
                'EXISTS (WITH RECURSIVE d(k, depth) AS (SELECT c.%1$I, 1 FROM %3$s c WHERE c.%2$I = t.%1$I'
                ' UNION ALL SELECT c.%1$I, d.depth + 1 FROM d JOIN %3$s c ON c.%2$I = d.k WHERE d.depth < 64)'
                ' SELECT 1 FROM d JOIN %3$s t ON t.%1$I = d.k WHERE NOT (coalesce(%4$s <= $1, false) AND %5$s))',
                r.key_column, r.parent_column, v_table, pgretention._entity_activity_sql(r.id),
                pgretention._entity_eligible_sql(r.id));
        END IF;
        EXECUTE format(
            'SELECT count(*), count(*) FILTER (WHERE x.kept), count(*) FILTER (WHERE NOT x.kept AND NOT x.noticed),'
            ' count(*) FILTER (WHERE NOT x.kept AND x.noticed)'
            ' FROM (SELECT %1$s AS kept, ($2::interval IS NULL OR EXISTS (SELECT 1 FROM pgretention.entity_notice n'
            '   WHERE n.rule_id = $3 AND n.key = t.%2$I::text AND n.first_listed_at <= $4 - $2::interval))'
            '   AS noticed FROM %3$s t WHERE %4$s <= $1 AND %5$s) x',
            v_desc, r.key_column, v_table, pgretention._entity_activity_sql(r.id), pgretention._entity_eligible_sql(r.id))
            USING v_now - r.period, r.notice_period, r.id, v_now
            INTO rows_expired, kept_by_descendants, waiting_for_notice, rows_due;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Erase one row now with its declared dependants (self-service deletion, an erasure request):
-- irreversible. Refused while the row has child rows in the hierarchy. One audit record; the key is
-- recorded as a sha256 hash only.
CREATE OR REPLACE FUNCTION pgretention.entity_erase(p_rule text, p_key text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule pgretention.entity_rule;
    v_table text;
    v_dep jsonb;
    v_name record;
    v_n bigint;
    v_deps jsonb := '{}';
    v_total bigint := 0;
    v_found boolean;
BEGIN
    v_rule := pgretention._rule(p_rule);
    v_table := format('%I.%I', v_rule.table_schema, v_rule.table_name);
    IF p_key IS NULL THEN
        RAISE EXCEPTION 'key of the row to erase from % must be given', v_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        -- the owner's rows, with the owner's rights (sql/core/exec.sql)
        v_found := pgretention._as_owner_value(v_table::regclass,
            format('SELECT pg_catalog.to_jsonb(true) FROM %s t WHERE t.%I = $1[1]::%s FOR UPDATE',
                   v_table, v_rule.key_column, v_rule.key_type), ARRAY[p_key])::boolean;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'invalid key for %: expected %', v_table, v_rule.key_type USING ERRCODE = 'invalid_parameter_value';
    END;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'no row with that key in %', v_table USING ERRCODE = 'no_data_found';
    END IF;
    IF v_rule.parent_column IS NOT NULL THEN
        v_n := pgretention._as_owner_value(v_table::regclass,
            format('SELECT pg_catalog.to_jsonb(count(*)) FROM %s c WHERE c.%I = $1[1]::%s',
                   v_table, v_rule.parent_column, v_rule.key_type), ARRAY[p_key])::bigint;
        IF v_n > 0 THEN
            RAISE EXCEPTION 'the row of % has % child rows (sub-accounts): erase or move them first', v_table, v_n
                USING ERRCODE = 'dependent_objects_still_exist';
        END IF;
    END IF;
    FOR v_dep IN SELECT value FROM jsonb_array_elements(v_rule.dependants) LOOP
        v_name := pgretention._split_name(v_dep ->> 'table');
        v_n := pgretention._as_owner(format('%I.%I', v_name.schema_name, v_name.table_name)::regclass,
            format('DELETE FROM %I.%I d WHERE d.%I = $1[1]::%s', v_name.schema_name, v_name.table_name,
                   v_dep ->> 'fk', v_rule.key_type), ARRAY[p_key]);
        v_deps := v_deps || jsonb_build_object(v_dep ->> 'table', v_n);
        v_total := v_total + v_n;
    END LOOP;
    PERFORM pgretention._as_owner(v_table::regclass,
        format('DELETE FROM %s t WHERE t.%I = $1[1]::%s', v_table, v_rule.key_column, v_rule.key_type), ARRAY[p_key]);
    DELETE FROM pgretention.entity_notice n WHERE n.rule_id = v_rule.id AND n.key = p_key;
    DELETE FROM pgretention.entity_work w WHERE w.rule_id = v_rule.id AND w.key = p_key;
    UPDATE pgretention.entity_rule r SET rows_deleted = r.rows_deleted + 1,
        dependants_deleted = r.dependants_deleted + v_total WHERE r.id = v_rule.id;
    PERFORM pgretention._audit('entity.erase', v_table, jsonb_build_object('rule', p_rule,
        'key_sha256', encode(sha256(convert_to(p_key, 'UTF8')), 'hex'), 'dependants', v_deps));
    RETURN 1 + v_total;
END
$$;

-- The report's check of entity rules: rules whose last batch failed, and rows past a rule's period
-- still waiting.
CREATE OR REPLACE FUNCTION pgretention.report_check_entity_rules(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pgretention.entity_status(p_now) LOOP
        section := 'entity_rules';
        object := r.rule_name || ' (' || r.table_name || ')';
        IF r.last_error IS NOT NULL THEN
            severity := 'violation'; check_name := 'failed'; value := NULL;
            message := format('the last batch of rule %s failed: %s', r.rule_name, r.last_error);
            RETURN NEXT;
        END IF;
        -- rows past the period that nothing keeps (no live descendant, notice served): the next run
        -- removes them; rows kept by a live sub-account or still in notice are rightly kept
        SELECT p.rows_due INTO value FROM pgretention.entity_plan(p_now, r.rule_name) p LIMIT 1;
        IF coalesce(value, 0) > 0 THEN
            severity := 'warning'; check_name := 'rows_past_period';
            message := format('%s rows are past the rule''s period of %s and due for removal at the next run',
                              value, r.period);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;
