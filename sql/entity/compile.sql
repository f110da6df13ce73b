-- Entity engine, a rule compiled to SQL: its activity (or end) time, the conditions that make a row
-- a candidate, and the SET list of an anonymise rule. Rules hold no SQL text: every name is quoted
-- here with format('%I').

-- SQL of a rule's activity (or end) time for the row aliased t: greatest() of its sources, as
-- timestamptz (timestamp and date columns read as UTC). NULL when no source has a value.
CREATE OR REPLACE FUNCTION pgretention._entity_activity_sql(p_rule_id int)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule pgretention.entity_rule;
    v_src jsonb;
    v_parts text[] := '{}';
    v_name record;
BEGIN
    SELECT * INTO v_rule FROM pgretention.entity_rule r WHERE r.id = p_rule_id;
    FOR v_src IN SELECT value FROM jsonb_array_elements(v_rule.activity) LOOP
        IF v_src ? 'table' THEN
            v_name := pgretention._split_name(v_src ->> 'table');
            v_parts := v_parts || format('(SELECT max(s.%I) FROM %I.%I s WHERE s.%I = t.%I)::timestamptz',
                v_src ->> 'column', v_name.schema_name, v_name.table_name, v_src ->> 'fk', v_rule.key_column);
        ELSE
            v_parts := v_parts || format('t.%I::timestamptz', v_src ->> 'column');
        END IF;
    END LOOP;
    RETURN format('greatest(%s)', array_to_string(v_parts, ', '));
END
$$;

-- Conditions on row t that make it a candidate at all: not exempt, not yet anonymised.
CREATE OR REPLACE FUNCTION pgretention._entity_eligible_sql(p_rule_id int)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule pgretention.entity_rule;
    v_parts text[] := ARRAY['true'];
    v_pending text[] := '{}';
    v_col text;
    v_def jsonb;
BEGIN
    SELECT * INTO v_rule FROM pgretention.entity_rule r WHERE r.id = p_rule_id;
    IF v_rule.exempt_column IS NOT NULL THEN
        v_parts := v_parts || format('NOT coalesce(t.%I, false)', v_rule.exempt_column);
    END IF;
    IF v_rule.action = 'anonymise' THEN
        FOR v_col, v_def IN SELECT key, value FROM jsonb_each(v_rule.anonymise) LOOP
            IF v_def ->> 'action' = 'null' THEN
                v_pending := v_pending || format('t.%I IS NOT NULL', v_col);
            ELSIF v_def ->> 'action' = 'constant' THEN
                v_pending := v_pending || format('t.%I IS DISTINCT FROM %L::%s', v_col, v_def ->> 'value',
                    pgretention._column_type(format('%I.%I', v_rule.table_schema, v_rule.table_name)::regclass,
                                                    v_col, 'anonymise'));
            END IF;
        END LOOP;
        v_parts := v_parts || ('(' || array_to_string(v_pending, ' OR ') || ')');
    END IF;
    RETURN array_to_string(v_parts, ' AND ');
END
$$;

-- SET list of an anonymise rule; $1[1] is the hash key (purpose 'entity') in hex, the statement's
-- parameter (never in its text). Replaced by the anonymiser's
-- column rules later.
CREATE OR REPLACE FUNCTION pgretention._entity_anonymise_sql(p_rule_id int)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule pgretention.entity_rule;
    v_col text;
    v_def jsonb;
    v_sets text[] := '{}';
    v_crypto name := pgretention._pgcrypto_schema();
BEGIN
    SELECT * INTO v_rule FROM pgretention.entity_rule r WHERE r.id = p_rule_id;
    FOR v_col, v_def IN SELECT key, value FROM jsonb_each(v_rule.anonymise) LOOP
        v_sets := v_sets || CASE v_def ->> 'action'
            WHEN 'null' THEN format('%I = NULL', v_col)
            WHEN 'constant' THEN format('%I = %L', v_col, v_def ->> 'value')
            WHEN 'hash' THEN format('%1$I = encode(%2$I.hmac(convert_to(%1$I::text, ''UTF8''), decode($1[1], ''hex''), ''sha256''), ''hex'')',
                                    v_col, v_crypto)
        END;
    END LOOP;
    RETURN array_to_string(v_sets, ', ');
END
$$;
