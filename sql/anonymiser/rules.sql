-- Anonymiser rules: how each column of a managed table is anonymised, the SELECT list that applies
-- them to a row, the columns still without a rule, and the report's check of them.

-- Declare how a column is anonymised. Methods and their parameter:
--   pseudonym            keyed HMAC per epoch (text columns)
--   e164_prefix [n]      keep '+' and the first n digits (country and area; default 4)
--   ip_prefix [v4/v6]    keep the network prefix (default 24/48 bits)
--   null | constant v    replace
--   time_trunc unit      hour, day, month (timestamp and date columns)
--   redact               free text replaced by '[redacted]'
--   jsonb_drop k1,k2     remove keys from a jsonb column
--   keep                 not personal: kept as is (so status stops reporting the column)
CREATE OR REPLACE FUNCTION pgretention.anon_rule_set(p_table text, p_column text, p_method text, p_param text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_type text;
    v_notnull boolean;
BEGIN
    v_type := pgretention._column_type(v_qual::regclass, p_column, NULL, false);
    v_notnull := (SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = v_qual::regclass AND a.attname = p_column);
    IF p_column = t.time_column OR p_column = t.class_column THEN
        RAISE EXCEPTION 'column % of table % is its time or class column: partitions depend on it; it cannot be anonymised',
            quote_ident(p_column), v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method IS NULL OR p_method NOT IN ('pseudonym', 'e164_prefix', 'ip_prefix', 'null', 'constant', 'time_trunc',
                                            'redact', 'jsonb_drop', 'keep') THEN
        RAISE EXCEPTION 'unknown anonymisation method % for column % of table %', coalesce(quote_literal(p_method), 'NULL'),
            quote_ident(p_column), v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method IN ('pseudonym', 'e164_prefix', 'redact') AND v_type NOT IN ('text', 'character varying', 'character') THEN
        RAISE EXCEPTION 'method % needs a text column; % of table % is %', p_method, quote_ident(p_column), v_qual, v_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF p_method = 'ip_prefix' AND v_type NOT IN ('inet', 'cidr', 'text', 'character varying') THEN
        RAISE EXCEPTION 'method ip_prefix needs an inet or text column; % of table % is %', quote_ident(p_column), v_qual, v_type
            USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF p_method = 'time_trunc' AND (v_type NOT IN ('timestamp with time zone', 'timestamp without time zone', 'date')
                                    OR p_param IS NULL OR p_param NOT IN ('hour', 'day', 'month')) THEN
        RAISE EXCEPTION 'method time_trunc needs a timestamp or date column and a unit hour, day or month (column % of table %)',
            quote_ident(p_column), v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method = 'jsonb_drop' AND (v_type <> 'jsonb' OR p_param IS NULL OR btrim(p_param) = '') THEN
        RAISE EXCEPTION 'method jsonb_drop needs a jsonb column and a list of keys (column % of table %)',
            quote_ident(p_column), v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method = 'null' AND v_notnull THEN
        RAISE EXCEPTION 'column % of table % is NOT NULL: use constant instead of null', quote_ident(p_column), v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method = 'e164_prefix' AND p_param IS NOT NULL AND p_param !~ '^[1-9][0-9]?$' THEN
        RAISE EXCEPTION 'e164_prefix keeps 1 to 99 digits, got %', quote_literal(p_param) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method = 'ip_prefix' AND p_param IS NOT NULL AND p_param !~ '^[0-9]{1,2}/[0-9]{1,3}$' THEN
        RAISE EXCEPTION 'ip_prefix takes IPv4/IPv6 prefix lengths such as 24/48, got %', quote_literal(p_param)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_method = 'constant' THEN
        BEGIN
            EXECUTE format('SELECT %L::%s', p_param, v_type);
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'constant % does not fit column % (%) of table %', coalesce(quote_literal(p_param), 'NULL'),
                quote_ident(p_column), v_type, v_qual USING ERRCODE = 'invalid_parameter_value';
        END;
    END IF;
    INSERT INTO pgretention.anon_rule (table_id, column_name, method, param) VALUES (t.id, p_column, p_method, p_param)
    ON CONFLICT (table_id, column_name) DO UPDATE SET method = excluded.method, param = excluded.param, created_at = now();
    PERFORM pgretention._rollup_recheck(t.id);  -- a roll-up must not keep what the rule makes an identifier
    PERFORM pgretention._audit('anon.rule', v_qual, jsonb_build_object('column', p_column, 'method', p_method, 'param', p_param));
END
$$;

-- Columns of a table that has rules but no rule for them (besides its time and class columns).
CREATE OR REPLACE FUNCTION pgretention.anon_unruled_columns(p_table_id int)
RETURNS text[]
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
    FROM pgretention.managed_table t
    JOIN pg_attribute a ON a.attrelid = format('%I.%I', t.table_schema, t.table_name)::regclass
    WHERE t.id = p_table_id AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname NOT IN (t.time_column, coalesce(t.class_column, ''))
      AND EXISTS (SELECT FROM pgretention.anon_rule r WHERE r.table_id = t.id)
      AND NOT EXISTS (SELECT FROM pgretention.anon_rule r WHERE r.table_id = t.id AND r.column_name = a.attname)
$$;

-- The SELECT list that anonymises a row of the table (alias t); keys arrive as jsonb in p_keys_param
-- ({epoch: hex key}), an expression over the statement's parameter, so they never appear in
-- statement text. The list calls only built-in functions (and pgcrypto): it runs as the table's owner.
-- p_only: a condition on the row; rows that fail it are copied unchanged (time-first layout: the
-- rows of one class in a shared partition)
CREATE OR REPLACE FUNCTION pgretention._anon_select_list(p_table_id int, p_keys_param text, p_single_key text DEFAULT NULL,
                                                         p_only text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table;
    a record;
    v_crypto name := pgretention._pgcrypto_schema();
    v_abs text;
    v_expr text;
    v_list text[] := '{}';
BEGIN
    t := pgretention._table(p_table_id);
    v_abs := pgretention._time_expr(t.time_column, t.time_type, t.time_zone);
    FOR a IN SELECT x.attname, format_type(x.atttypid, x.atttypmod) AS typ, r.method, r.param
             FROM pg_attribute x LEFT JOIN pgretention.anon_rule r ON r.table_id = t.id AND r.column_name = x.attname
             WHERE x.attrelid = format('%I.%I', t.table_schema, t.table_name)::regclass AND x.attnum > 0 AND NOT x.attisdropped
             ORDER BY x.attnum LOOP
        v_expr := CASE coalesce(a.method, 'keep')
            WHEN 'keep' THEN format('t.%I', a.attname)
            WHEN 'pseudonym' THEN format('(''p'' || left(encode(%I.hmac(convert_to(t.%I::text, ''UTF8''),'
                ' %s, ''sha256''), ''hex''), 24))::%s', v_crypto, a.attname,
                -- the epoch of the row (pgretention._anon_epoch, inline: the statement runs as the
                -- table's owner, who cannot call pgretention's functions)
                coalesce(p_single_key, format('decode(%s ->> to_char((%s) AT TIME ZONE ''UTC'', ''YYYY"q"Q''), ''hex'')',
                                              p_keys_param, v_abs)),
                a.typ)
            WHEN 'e164_prefix' THEN format('(CASE WHEN t.%I IS NULL THEN NULL ELSE left(t.%I::text, %s) END)::%s',
                a.attname, a.attname, 1 + coalesce(a.param, '4')::int, a.typ)
            WHEN 'ip_prefix' THEN format('(CASE WHEN t.%I IS NULL THEN NULL ELSE'
                ' host(network(set_masklen(t.%I::inet, CASE family(t.%I::inet) WHEN 4 THEN %s ELSE %s END))) END)::%s',
                a.attname, a.attname, a.attname, split_part(coalesce(a.param, '24/48'), '/', 1),
                split_part(coalesce(a.param, '24/48'), '/', 2), a.typ)
            WHEN 'null' THEN format('NULL::%s', a.typ)
            WHEN 'constant' THEN format('%L::%s', a.param, a.typ)
            WHEN 'time_trunc' THEN format('date_trunc(%L, t.%I)::%s', a.param, a.attname, a.typ)
            WHEN 'redact' THEN format('(CASE WHEN t.%I IS NULL THEN NULL ELSE ''[redacted]'' END)::%s', a.attname, a.typ)
            WHEN 'jsonb_drop' THEN format('(t.%I - %L::text[])', a.attname,
                '{' || array_to_string(ARRAY(SELECT btrim(k) FROM unnest(string_to_array(a.param, ',')) k), ',') || '}')
        END;
        IF p_only IS NOT NULL AND p_only <> 'true' AND coalesce(a.method, 'keep') <> 'keep' THEN
            v_expr := format('CASE WHEN %s THEN %s ELSE t.%I END', p_only, v_expr, a.attname);
        END IF;
        v_list := v_list || v_expr;
    END LOOP;
    RETURN array_to_string(v_list, ', ');
END
$$;

-- The report's check of anonymisation: columns without a rule, of managed tables with a class that
-- anonymises (anonymise_after; method 'keep' is an explicit rule), and identifier columns of
-- subject tables erased by anonymisation that have no replacement.
CREATE OR REPLACE FUNCTION pgretention.report_check_anonymisation(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
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
    ORDER BY 3, a.attnum;
    RETURN QUERY
    SELECT 'anonymisation'::text, 'warning'::text, format('%I.%I', t.table_schema, t.table_name),
           'column_without_rule'::text,
           format('column %I holds %s identifiers and has no anonymisation rule for erasure', c.column_name, c.kind),
           1::bigint
    FROM pgretention.subject_table t JOIN pgretention.subject_column c ON c.table_id = t.id
    WHERE t.erasure = 'anonymise' AND NOT (t.anonymise ? c.column_name::text)
    ORDER BY 3, c.column_name;
END
$$;
