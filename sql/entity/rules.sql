-- Entity engine, policy API: row-level retention rules over ordinary tables (accounts, customers,
-- consent proofs, leads). A rule names its table, key column, an activity (or end) expression
-- given as a JSON list of sources (no SQL text), a period, an action and how dependants go.
-- See docs/entity-engine.md.

-- Validate an activity document and return it normalised (tables schema-qualified, unquoted):
-- [{"column": "last_login_at"}, {"table": "public.credit", "fk": "account_id", "column": "expires_at"}]
CREATE OR REPLACE FUNCTION pgretention._entity_check_activity(p_table regclass, p_key_type text, p_activity jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_src jsonb;
    v_out jsonb := '[]';
    v_keys text[];
    v_other regclass;
    v_type text;
    v_name record;
BEGIN
    IF p_activity IS NULL OR jsonb_typeof(p_activity) <> 'array' OR jsonb_array_length(p_activity) = 0 THEN
        RAISE EXCEPTION 'activity of a rule on % must be a non-empty JSON list of sources such as {"column": "last_login_at"}',
            p_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(p_activity) > 16 THEN
        RAISE EXCEPTION 'activity of a rule on % has more than 16 sources', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_src IN SELECT value FROM jsonb_array_elements(p_activity) LOOP
        IF jsonb_typeof(v_src) <> 'object' THEN
            RAISE EXCEPTION 'activity source % of a rule on % must be a JSON object', v_src, p_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_keys := ARRAY(SELECT jsonb_object_keys(v_src) ORDER BY 1);
        IF v_keys = ARRAY['column'] THEN
            v_type := pgretention._column_type(p_table, v_src ->> 'column', 'activity source');
            IF v_type NOT IN ('timestamp with time zone', 'timestamp without time zone', 'date') THEN
                RAISE EXCEPTION 'activity column % of table % is of type %: expected timestamptz, timestamp or date',
                    quote_ident(v_src ->> 'column'), p_table, v_type USING ERRCODE = 'datatype_mismatch';
            END IF;
            v_out := v_out || jsonb_build_array(jsonb_build_object('column', v_src ->> 'column'));
        ELSIF v_keys = ARRAY['column', 'fk', 'table'] THEN
            v_other := pgretention._user_table(v_src ->> 'table', 'activity source');
            v_type := pgretention._column_type(v_other, v_src ->> 'fk', 'foreign key of an activity source');
            IF v_type <> p_key_type THEN
                RAISE EXCEPTION 'column % of table % is of type %, the key of % is %',
                    quote_ident(v_src ->> 'fk'), v_other, v_type, p_table, p_key_type USING ERRCODE = 'datatype_mismatch';
            END IF;
            v_type := pgretention._column_type(v_other, v_src ->> 'column', 'activity source');
            IF v_type NOT IN ('timestamp with time zone', 'timestamp without time zone', 'date') THEN
                RAISE EXCEPTION 'activity column % of table % is of type %: expected timestamptz, timestamp or date',
                    quote_ident(v_src ->> 'column'), v_other, v_type USING ERRCODE = 'datatype_mismatch';
            END IF;
            SELECT n.nspname AS s, c.relname AS t INTO v_name
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_other;
            v_out := v_out || jsonb_build_array(jsonb_build_object(
                'table', v_name.s || '.' || v_name.t, 'fk', v_src ->> 'fk', 'column', v_src ->> 'column'));
        ELSE
            RAISE EXCEPTION 'activity source % of a rule on %: expected {"column": C} or {"table": T, "fk": F, "column": C}',
                v_src, p_table USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    RETURN v_out;
END
$$;

-- Validate the dependants (child tables cleaned before the row goes): [{"table": T, "fk": F}, ...].
-- An empty list means the foreign keys of the children cascade (ON DELETE CASCADE / SET NULL).
CREATE OR REPLACE FUNCTION pgretention._entity_check_dependants(p_table regclass, p_key_type text, p_dependants jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_dep jsonb;
    v_out jsonb := '[]';
    v_other regclass;
    v_type text;
    v_name record;
BEGIN
    IF p_dependants IS NULL THEN
        RETURN v_out;
    END IF;
    IF jsonb_typeof(p_dependants) <> 'array' THEN
        RAISE EXCEPTION 'dependants of a rule on % must be a JSON list of {"table": T, "fk": F}', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_dep IN SELECT value FROM jsonb_array_elements(p_dependants) LOOP
        IF jsonb_typeof(v_dep) <> 'object' OR ARRAY(SELECT jsonb_object_keys(v_dep) ORDER BY 1) <> ARRAY['fk', 'table'] THEN
            RAISE EXCEPTION 'dependant % of a rule on %: expected {"table": T, "fk": F}', v_dep, p_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_other := pgretention._user_table(v_dep ->> 'table', 'dependant');
        v_type := pgretention._column_type(v_other, v_dep ->> 'fk', 'foreign key of a dependant');
        IF v_type <> p_key_type THEN
            RAISE EXCEPTION 'column % of table % is of type %, the key of % is %',
                quote_ident(v_dep ->> 'fk'), v_other, v_type, p_table, p_key_type USING ERRCODE = 'datatype_mismatch';
        END IF;
        SELECT n.nspname AS s, c.relname AS t INTO v_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_other;
        v_out := v_out || jsonb_build_array(jsonb_build_object('table', v_name.s || '.' || v_name.t, 'fk', v_dep ->> 'fk'));
    END LOOP;
    RETURN v_out;
END
$$;

-- Validate the column actions of an anonymise rule:
-- {"name": {"action": "null"}, "email": {"action": "hash"}, "language": {"action": "constant", "value": "en"}}.
-- At least one column must be set to NULL or a constant: that is how an anonymised row is recognised.
-- Same shape as the anonymiser's column rules, which can take over this part later.
CREATE OR REPLACE FUNCTION pgretention._entity_check_anonymise(
    p_table regclass, p_key_column text, p_parent_column text, p_spec jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_col text;
    v_def jsonb;
    v_type text;
    v_marker boolean := false;
    v_out jsonb := '{}';
BEGIN
    IF p_spec IS NULL OR jsonb_typeof(p_spec) <> 'object' OR p_spec = '{}'::jsonb THEN
        RAISE EXCEPTION 'anonymise rule on % needs column actions such as {"email": {"action": "null"}}', p_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_col, v_def IN SELECT key, value FROM jsonb_each(p_spec) LOOP
        v_type := pgretention._column_type(p_table, v_col, 'anonymise');
        -- the anonymiser's vocabulary is accepted too: {"method": "null" | "constant" | "pseudonym", "param": ...}
        IF jsonb_typeof(v_def) = 'object' AND v_def ? 'method' AND NOT v_def ? 'action' THEN
            v_def := jsonb_strip_nulls(jsonb_build_object(
                'action', CASE v_def ->> 'method' WHEN 'pseudonym' THEN 'hash' ELSE v_def ->> 'method' END,
                'value', v_def -> 'param')) || (v_def - 'method' - 'param');
        END IF;
        IF v_col = p_key_column OR v_col IS NOT DISTINCT FROM p_parent_column THEN
            RAISE EXCEPTION 'column % of table % is the key or parent column: it cannot be anonymised',
                quote_ident(v_col), p_table USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF jsonb_typeof(v_def) <> 'object' OR NOT v_def ? 'action'
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(v_def) k WHERE k NOT IN ('action', 'value')) THEN
            RAISE EXCEPTION 'anonymise action of column % of table %: expected {"action": "null" | "constant" | "hash"}',
                quote_ident(v_col), p_table USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CASE v_def ->> 'action'
        WHEN 'null' THEN
            IF (SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = p_table AND a.attname = v_col) THEN
                RAISE EXCEPTION 'column % of table % is NOT NULL: use a constant', quote_ident(v_col), p_table
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_marker := true;
        WHEN 'constant' THEN
            IF v_def -> 'value' IS NULL OR jsonb_typeof(v_def -> 'value') = 'null' THEN
                RAISE EXCEPTION 'constant for column % of table % is missing', quote_ident(v_col), p_table
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            BEGIN
                EXECUTE format('SELECT %L::%s', v_def ->> 'value', v_type);
            EXCEPTION WHEN data_exception THEN
                RAISE EXCEPTION 'constant % is not a valid % for column % of table %', quote_literal(v_def ->> 'value'),
                    v_type, quote_ident(v_col), p_table USING ERRCODE = 'invalid_parameter_value';
            END;
            v_marker := true;
        WHEN 'hash' THEN
            IF v_type NOT IN ('text', 'character varying') AND v_type NOT LIKE 'character varying(%' THEN
                RAISE EXCEPTION 'column % of table % is of type %: a keyed hash needs text or varchar',
                    quote_ident(v_col), p_table, v_type USING ERRCODE = 'datatype_mismatch';
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown anonymise action % for column % of table %', quote_literal(v_def ->> 'action'),
                quote_ident(v_col), p_table USING ERRCODE = 'invalid_parameter_value';
        END CASE;
        v_out := v_out || jsonb_build_object(v_col, v_def);
    END LOOP;
    IF NOT v_marker THEN
        RAISE EXCEPTION 'anonymise rule on % must set at least one column to NULL or a constant (that marks a row as done)',
            p_table USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_out;
END
$$;

-- A key of the table reached again by walking up the parent column, if any (a cycle).
CREATE OR REPLACE FUNCTION pgretention._entity_find_cycle(p_table regclass, p_key text, p_parent text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text;
BEGIN
    EXECUTE format(
        'WITH RECURSIVE up(start, cur, depth) AS ('
        '  SELECT t.%1$I, t.%2$I, 1 FROM %3$s t WHERE t.%2$I IS NOT NULL'
        '  UNION ALL'
        '  SELECT up.start, t.%2$I, up.depth + 1 FROM up JOIN %3$s t ON t.%1$I = up.cur'
        '  WHERE t.%2$I IS NOT NULL AND up.cur <> up.start AND up.depth < 64)'
        ' SELECT start::text FROM up WHERE cur = start OR depth >= 64 LIMIT 1',
        p_key, p_parent, p_table) INTO v_key;
    RETURN v_key;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.entity_rule_create(
    p_name text,
    p_table text,
    p_key_column text,
    p_activity jsonb,
    p_period text,
    p_action text DEFAULT 'delete',
    p_anonymise jsonb DEFAULT NULL,
    p_dependants jsonb DEFAULT '[]',
    p_parent_column text DEFAULT NULL,
    p_exempt_column text DEFAULT NULL,
    p_notice_period text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_name record;
    v_key_type text;
    v_type text;
    v_activity jsonb;
    v_dependants jsonb;
    v_period interval;
    v_notice interval;
    v_cycle text;
    v_anonymise jsonb;
    v_id int;
BEGIN
    IF p_name IS NULL OR p_name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid rule name %: use lower-case letters, digits and _ starting with a letter',
            coalesce(quote_literal(p_name), 'NULL') USING ERRCODE = 'invalid_name';
    END IF;
    IF EXISTS (SELECT 1 FROM pgretention.entity_rule r WHERE r.rule_name = p_name) THEN
        RAISE EXCEPTION 'entity rule % already exists', p_name USING ERRCODE = 'duplicate_object';
    END IF;
    -- the rule table, its dependants and activity tables: tables the caller may act on (core/names.sql)
    v_table := pgretention._user_table(p_table, 'rule');
    SELECT n.nspname AS s, c.relname AS t INTO v_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_table;
    v_key_type := pgretention._column_type(v_table, p_key_column, 'key');
    IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = v_table AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
                     AND a.attname = p_key_column) THEN
        RAISE EXCEPTION 'key column % of table % has no unique index', quote_ident(p_key_column), v_table
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_activity := pgretention._entity_check_activity(v_table, v_key_type, p_activity);
    v_period := pgretention._parse_interval(format('period of rule %s', p_name), p_period);
    IF p_action IS NULL OR p_action NOT IN ('delete', 'anonymise') THEN
        RAISE EXCEPTION 'invalid action % of rule %: expected delete or anonymise', coalesce(quote_literal(p_action), 'NULL'),
            p_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_action = 'delete' AND p_anonymise IS NOT NULL THEN
        RAISE EXCEPTION 'rule % deletes rows: column actions are only for anonymise rules', p_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_dependants := pgretention._entity_check_dependants(v_table, v_key_type, p_dependants);
    IF p_parent_column IS NOT NULL THEN
        v_type := pgretention._column_type(v_table, p_parent_column, 'parent');
        IF v_type <> v_key_type THEN
            RAISE EXCEPTION 'parent column % of table % is of type %, its key % is %', quote_ident(p_parent_column),
                v_table, v_type, quote_ident(p_key_column), v_key_type USING ERRCODE = 'datatype_mismatch';
        END IF;
        IF p_parent_column = p_key_column THEN
            RAISE EXCEPTION 'parent column of table % cannot be its key column %: that is a cycle', v_table,
                quote_ident(p_key_column) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_cycle := pgretention._entity_find_cycle(v_table, p_key_column, p_parent_column);
        IF v_cycle IS NOT NULL THEN
            RAISE EXCEPTION 'hierarchy of table % (parent column %) has a cycle: the row with key hash % is its own ancestor',
                v_table, quote_ident(p_parent_column), left(encode(sha256(convert_to(v_cycle, 'UTF8')), 'hex'), 16)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF p_action = 'anonymise' THEN
        v_anonymise := pgretention._entity_check_anonymise(v_table, p_key_column, p_parent_column, p_anonymise);
    END IF;
    IF p_exempt_column IS NOT NULL THEN
        v_type := pgretention._column_type(v_table, p_exempt_column, 'exemption');
        IF v_type <> 'boolean' THEN
            RAISE EXCEPTION 'exemption column % of table % is of type %: expected boolean', quote_ident(p_exempt_column),
                v_table, v_type USING ERRCODE = 'datatype_mismatch';
        END IF;
    END IF;
    IF p_notice_period IS NOT NULL THEN
        v_notice := pgretention._parse_interval(format('notice period of rule %s', p_name), p_notice_period);
    END IF;

    INSERT INTO pgretention.entity_rule (rule_name, table_schema, table_name, key_column, key_type, activity, period,
        action, anonymise, dependants, parent_column, exempt_column, notice_period)
    VALUES (p_name, v_name.s, v_name.t, p_key_column, v_key_type, v_activity, v_period, p_action,
        v_anonymise, v_dependants, p_parent_column, p_exempt_column, v_notice)
    RETURNING id INTO v_id;
    PERFORM pgretention._audit('entity.rule.create', format('%I.%I', v_name.s, v_name.t), jsonb_build_object(
        'rule', p_name, 'key', p_key_column, 'activity', v_activity, 'period', v_period::text, 'action', p_action,
        'anonymise', v_anonymise, 'dependants', v_dependants, 'parent_column', p_parent_column,
        'exempt_column', p_exempt_column, 'notice_period', v_notice::text));
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.entity_rule_drop(p_name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule pgretention.entity_rule;
BEGIN
    v_rule := pgretention._rule(p_name);
    DELETE FROM pgretention.entity_rule r WHERE r.id = v_rule.id;
    PERFORM pgretention._audit('entity.rule.drop', format('%I.%I', v_rule.table_schema, v_rule.table_name),
        jsonb_build_object('rule', p_name, 'rows_deleted', v_rule.rows_deleted, 'rows_anonymised', v_rule.rows_anonymised));
END
$$;
