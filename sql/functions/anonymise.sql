-- The anonymiser: per-column rules of a managed table, applied to a whole partition once it passes
-- its class's anonymise_after, by rewriting it into an anonymised copy that is swapped in. Rows are
-- never updated in place for the bulk.
--
-- A rewrite is three short steps, each its own transaction, recorded in pgretention.anon_op:
--   prepare: create the empty copy and a capture trigger on the original partition (bounded lock
--            wait); from then on, late rows for the partition's range go anonymised into the copy;
--   copy:    INSERT ... SELECT the anonymised rows into the copy, build its indexes and a CHECK
--            constraint equal to the partition bounds (so attaching it scans nothing);
--   swap:    detach the original and attach the copy under the original's name (bounded lock wait);
--   finish:  drop the original.
-- A crash at any point leaves either the original or the copy attached, never neither or both,
-- and the next run continues from the recorded state.

CREATE OR REPLACE FUNCTION pgretention._anon_epoch(p_abs timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_char(p_abs AT TIME ZONE 'UTC', 'YYYY"q"Q') $$;

-- The secret key of an epoch, created on first use. Raises when it was destroyed.
CREATE OR REPLACE FUNCTION pgretention._epoch_key(p_epoch text)
RETURNS bytea
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k pgretention.anon_key;
    v_key bytea;
BEGIN
    SELECT * INTO k FROM pgretention.anon_key WHERE epoch = p_epoch;
    IF FOUND AND k.destroyed_at IS NOT NULL THEN
        RAISE EXCEPTION 'the pseudonym key of epoch % was destroyed at %', p_epoch, k.destroyed_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF FOUND THEN
        RETURN k.key;
    END IF;
    EXECUTE format('SELECT %I.gen_random_bytes(32)', (SELECT pgcrypto_schema FROM pgretention.installation)) INTO v_key;
    INSERT INTO pgretention.anon_key (epoch, key) VALUES (p_epoch, v_key) ON CONFLICT (epoch) DO NOTHING;
    SELECT key INTO v_key FROM pgretention.anon_key WHERE epoch = p_epoch;
    PERFORM pgretention._audit('key.create', p_epoch, '{}');
    RETURN v_key;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.anon_key_rotate(p_epoch text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key bytea;
BEGIN
    IF p_epoch IS NULL OR p_epoch !~ '^[0-9]{4}q[1-4]$' THEN
        RAISE EXCEPTION 'invalid epoch %: expected a quarter such as 2026q3', coalesce(quote_literal(p_epoch), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT %I.gen_random_bytes(32)', (SELECT pgcrypto_schema FROM pgretention.installation)) INTO v_key;
    INSERT INTO pgretention.anon_key (epoch, key) VALUES (p_epoch, v_key)
    ON CONFLICT (epoch) DO UPDATE SET key = excluded.key, rotated_at = now(), destroyed_at = NULL;
    PERFORM pgretention._audit('key.rotate', p_epoch, '{}');
END
$$;

CREATE OR REPLACE FUNCTION pgretention.anon_key_destroy(p_epoch text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE pgretention.anon_key SET key = NULL, destroyed_at = now() WHERE epoch = p_epoch AND destroyed_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no live pseudonym key for epoch %', coalesce(quote_literal(p_epoch), 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM pgretention._audit('key.destroy', p_epoch, '{}');
END
$$;

-- Declare how a column is anonymised. Methods and their parameter:
--   pseudonym            keyed HMAC per epoch (text columns)
--   e164_prefix [n]      keep '+' and the first n digits (country and area; default 4)
--   ip_prefix [v4/v6]    keep the network prefix (default 24/48 bits)
--   null | constant v    replace
--   time_trunc unit      hour, day, month (timestamp and date columns)
--   redact               free text replaced by '[redacted]'
--   jsonb_drop k1,k2     remove keys from a jsonb column
--   keep                 not personal: kept as is (so status stops reporting the column)
CREATE OR REPLACE FUNCTION pgretention.anon_set_rule(p_table text, p_column text, p_method text, p_param text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_type text;
    v_notnull boolean;
BEGIN
    PERFORM pgretention._check_ident('column', p_column);
    SELECT format_type(a.atttypid, NULL), a.attnotnull INTO v_type, v_notnull FROM pg_attribute a
    WHERE a.attrelid = v_qual::regclass AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column % does not exist in table %', quote_ident(p_column), v_qual USING ERRCODE = 'undefined_column';
    END IF;
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
            EXECUTE format('SELECT %L::%s', p_param, format_type((SELECT atttypid FROM pg_attribute WHERE attrelid = v_qual::regclass
                           AND attname = p_column), NULL));
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'constant % does not fit column % (%) of table %', coalesce(quote_literal(p_param), 'NULL'),
                quote_ident(p_column), v_type, v_qual USING ERRCODE = 'invalid_parameter_value';
        END;
    END IF;
    INSERT INTO pgretention.anon_rule (table_id, column_name, method, param) VALUES (t.id, p_column, p_method, p_param)
    ON CONFLICT (table_id, column_name) DO UPDATE SET method = excluded.method, param = excluded.param, created_at = now();
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
-- ({epoch: hex key}), so they never appear in statement text.
DROP FUNCTION IF EXISTS pgretention._anon_select_list(int, text, text);
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
    v_crypto name := (SELECT pgcrypto_schema FROM pgretention.installation);
    v_abs text;
    v_expr text;
    v_list text[] := '{}';
BEGIN
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    v_abs := CASE t.time_type WHEN 'timestamptz' THEN format('t.%I', t.time_column)
                              WHEN 'epoch' THEN format('to_timestamp(t.%I)', t.time_column)
                              ELSE format('(t.%I::timestamp AT TIME ZONE %L)', t.time_column, t.time_zone) END;
    FOR a IN SELECT x.attname, format_type(x.atttypid, x.atttypmod) AS typ, r.method, r.param
             FROM pg_attribute x LEFT JOIN pgretention.anon_rule r ON r.table_id = t.id AND r.column_name = x.attname
             WHERE x.attrelid = format('%I.%I', t.table_schema, t.table_name)::regclass AND x.attnum > 0 AND NOT x.attisdropped
             ORDER BY x.attnum LOOP
        v_expr := CASE coalesce(a.method, 'keep')
            WHEN 'keep' THEN format('t.%I', a.attname)
            WHEN 'pseudonym' THEN format('(''p'' || left(encode(%I.hmac(convert_to(t.%I::text, ''UTF8''),'
                ' %s, ''sha256''), ''hex''), 24))::%s', v_crypto, a.attname,
                coalesce(p_single_key, format('decode(%s ->> pgretention._anon_epoch(%s), ''hex'')', p_keys_param, v_abs)),
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

-- Keys of every epoch a partition range touches, as {epoch: hex}.
CREATE OR REPLACE FUNCTION pgretention._anon_keys(p_from timestamptz, p_to timestamptz)
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(e, encode(pgretention._epoch_key(e), 'hex')), '{}')
    FROM (SELECT DISTINCT pgretention._anon_epoch(d) AS e
          FROM generate_series(p_from, p_to - interval '1 microsecond', interval '1 month') d
          UNION SELECT pgretention._anon_epoch(p_to - interval '1 microsecond')) x
$$;

-- Trigger on a partition being rewritten: late rows go anonymised into the copy; updates and
-- deletes wait for the rewrite to finish (they are refused meanwhile).
CREATE OR REPLACE FUNCTION pgretention._anon_capture()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
    t pgretention.managed_table;
BEGIN
    SELECT * INTO o FROM pgretention.anon_op WHERE id = TG_ARGV[0]::bigint;
    SELECT * INTO t FROM pgretention.managed_table WHERE id = o.table_id;
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'partition %.% is being anonymised: % refused, retry after the rewrite',
            o.partition_schema, o.partition_name, TG_OP USING ERRCODE = 'object_in_use';
    END IF;
    EXECUTE format('INSERT INTO %I.%I SELECT %s FROM (SELECT ($1).*) t', o.partition_schema, o.copy_name,
                   pgretention._anon_select_list(o.table_id, '$2', NULL, pgretention._class_filter(o.table_id, o.class_name)))
        USING NEW, pgretention._anon_keys(pgretention._to_abs(o.range_from, t.time_type, t.time_zone),
                                          pgretention._to_abs(o.range_to, t.time_type, t.time_zone));
    RETURN NULL;
END
$$;

-- Partitions of a class past anonymise_after (and not yet past drop_after), not done yet, with
-- no row under a legal hold.
CREATE OR REPLACE FUNCTION pgretention._anon_due(p_table_id int, p_class text, p_now timestamptz)
RETURNS TABLE (leaf regclass, leaf_schema name, leaf_name name, range_from text, range_to text,
               lower_abs timestamptz, upper_abs timestamptz)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    l record;
    v_held boolean;
BEGIN
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    SELECT * INTO c FROM pgretention.retention_class WHERE table_id = p_table_id AND class_name = p_class;
    IF c.anonymise_after IS NULL OR NOT EXISTS (SELECT FROM pgretention.anon_rule WHERE table_id = p_table_id) THEN
        RETURN;
    END IF;
    -- time-first layout: each class rewrites the shared partition for its own rows, in turn
    FOR l IN SELECT * FROM pgretention._leaves(p_table_id, p_class) x
             WHERE NOT x.is_default AND x.upper_abs <= p_now - c.anonymise_after AND x.upper_abs > p_now - c.drop_after
               AND NOT EXISTS (SELECT FROM pgretention.anon_op o WHERE o.table_id = p_table_id
                               AND o.class_name = p_class AND o.range_from = x.range_from AND o.state = 'done')
             ORDER BY x.lower_abs LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pgretention.retention_class h
                              WHERE h.table_id = p_table_id AND (h.class_name = p_class OR t.layout = 'time')
                                AND pgretention._leaf_held(p_table_id, h.class_name, l.lower_abs, l.upper_abs, p_now));
        EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE %s)', l.leaf,
                       pgretention._hold_predicate(t.table_schema, t.table_name, p_now, true)) INTO v_held;
        CONTINUE WHEN v_held;
        leaf := l.leaf; leaf_schema := l.leaf_schema; leaf_name := l.leaf_name; range_from := l.range_from;
        range_to := l.range_to; lower_abs := l.lower_abs; upper_abs := l.upper_abs;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Step 1: the empty copy and the capture trigger (bounded lock wait on the partition).
-- Returns the operation id, or NULL when the lock was not granted in time.
CREATE OR REPLACE FUNCTION pgretention._anon_prepare(p_table_id int, p_class text, p_leaf regclass, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l record;
    v_id bigint;
    v_copy name;
BEGIN
    SELECT * INTO l FROM pgretention._leaves_of(p_table_id, p_class, p_leaf) x;
    SELECT id INTO v_id FROM pgretention.anon_op WHERE table_id = p_table_id AND class_name = p_class
        AND range_from = l.range_from AND state <> 'done';
    IF FOUND THEN
        RETURN v_id;  -- resumed
    END IF;
    PERFORM pgretention._rollup_leaf(p_table_id, p_class, p_leaf, l.range_from, l.range_to);
    v_copy := (left(l.leaf_name, 50) || '_pgr_anon')::name;
    INSERT INTO pgretention.anon_op (table_id, class_name, partition_schema, partition_name, copy_name, range_from, range_to, state)
    VALUES (p_table_id, p_class, l.leaf_schema, l.leaf_name, v_copy, l.range_from, l.range_to, 'prepared')
    RETURNING id INTO v_id;
    IF pgretention._is_distributed(p_leaf) THEN
        RETURN v_id;  -- Citus has no row triggers here: the copy is made in the swap's transaction
    END IF;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE'
                       ' INCLUDING COMMENTS INCLUDING GENERATED)', l.leaf_schema, v_copy, p_leaf);
        EXECUTE format('CREATE TRIGGER pgr_anon_capture BEFORE INSERT OR UPDATE OR DELETE ON %s'
                       ' FOR EACH ROW EXECUTE FUNCTION pgretention._anon_capture(%L)', p_leaf, v_id);
    EXCEPTION WHEN lock_not_available THEN
        -- nothing prepared: no operation either (a retry starts afresh, not from a missing copy)
        DELETE FROM pgretention.anon_op WHERE id = v_id;
        RETURN NULL;
    END;
    RETURN v_id;
END
$$;

-- Step 2: copy the anonymised rows, build the indexes and the bounds constraint. Idempotent.
-- (A Citus partition is copied in the swap's transaction instead: _anon_swap.)
CREATE OR REPLACE FUNCTION pgretention._anon_copy(p_op bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
BEGIN
    SELECT * INTO o FROM pgretention.anon_op WHERE id = p_op FOR UPDATE;
    IF o.state <> 'prepared' OR o.rows_copied IS NOT NULL
       OR pgretention._is_distributed(format('%I.%I', o.partition_schema, o.partition_name)::regclass) THEN
        RETURN coalesce(o.rows_copied, 0);
    END IF;
    RETURN pgretention._anon_fill(p_op, false);
END
$$;

-- Fill the copy of an operation with the anonymised rows of the original, then its indexes and
-- bounds constraint; records and returns the rows copied. p_pull: read the original through the
-- coordinator (Citus), so that pgretention's functions in the expressions run where they exist.
CREATE OR REPLACE FUNCTION pgretention._anon_fill(p_op bigint, p_pull boolean)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    o pgretention.anon_op;
    t pgretention.managed_table;
    v_orig regclass;
    v_copy text;
    v_src text;
    v_n bigint;
    v_idx record;
    v_keys jsonb;
    v_only text;
BEGIN
    SELECT * INTO o FROM pgretention.anon_op WHERE id = p_op;
    SELECT * INTO t FROM pgretention.managed_table WHERE id = o.table_id;
    v_orig := format('%I.%I', o.partition_schema, o.partition_name)::regclass;
    v_copy := format('%I.%I', o.partition_schema, o.copy_name);
    v_src := CASE WHEN p_pull THEN format('(SELECT * FROM %s OFFSET 0)', v_orig) ELSE v_orig::text END;
    v_only := pgretention._class_filter(t.id, o.class_name);
    -- the copy's indexes are built after the load: give the sorts room (this transaction only)
    PERFORM set_config('maintenance_work_mem', greatest(pg_size_bytes(current_setting('maintenance_work_mem')),
                                                        512 * 1024 * 1024)::text || 'B', true);
    BEGIN
        PERFORM set_config('log_parameter_max_length', '0', true);  -- keys are parameters: never log them
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    v_keys := pgretention._anon_keys(pgretention._to_abs(o.range_from, t.time_type, t.time_zone),
                                     pgretention._to_abs(o.range_to, t.time_type, t.time_zone));
    IF (SELECT count(*) FROM jsonb_object_keys(v_keys)) = 1 THEN
        -- the whole partition lies in one epoch: one key for every row
        EXECUTE format('INSERT INTO %s SELECT %s FROM %s t', v_copy,
                       pgretention._anon_select_list(t.id, '$1', '$2', v_only), v_src)
            USING v_keys, decode((SELECT value #>> '{}' FROM jsonb_each(v_keys)), 'hex');
    ELSE
        EXECUTE format('INSERT INTO %s SELECT %s FROM %s t', v_copy,
                       pgretention._anon_select_list(t.id, '$1', NULL, v_only), v_src)
            USING v_keys;
    END IF;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    FOR v_idx IN SELECT i.indisunique, substring(pg_get_indexdef(i.indexrelid) FROM ' USING (.*)$') AS body
                 FROM pg_index i WHERE i.indrelid = v_orig LOOP
        EXECUTE format('CREATE %sINDEX ON %s USING %s', CASE WHEN v_idx.indisunique THEN 'UNIQUE ' ELSE '' END,
                       v_copy, v_idx.body);
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = v_copy::regclass AND conname = 'pgr_bounds') THEN
        -- (a partition rewritten before has it already: LIKE ... INCLUDING CONSTRAINTS)
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT pgr_bounds CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L)',
                       v_copy, t.time_column, t.time_column, o.range_from, t.time_column, o.range_to);
    END IF;
    UPDATE pgretention.anon_op SET rows_copied = v_n WHERE id = p_op;
    RETURN v_n;
END
$$;

-- Step 3: swap (bounded lock wait on the class parent). Returns false when the lock was not granted.
CREATE OR REPLACE FUNCTION pgretention._anon_swap(p_op bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
    c pgretention.retention_class;
    v_parent text;
    v_old name;
    v_owner name;
    v_dist boolean;
    g record;
BEGIN
    SELECT * INTO o FROM pgretention.anon_op WHERE id = p_op FOR UPDATE;
    IF o.state <> 'prepared' THEN
        RETURN true;
    END IF;
    SELECT * INTO c FROM pgretention.retention_class WHERE table_id = o.table_id AND class_name = o.class_name;
    v_parent := format('%I.%I', c.parent_schema, c.parent_name);
    v_dist := pgretention._is_distributed(format('%I.%I', o.partition_schema, o.partition_name)::regclass);
    IF o.rows_copied IS NULL AND NOT v_dist THEN
        RETURN false;
    END IF;
    v_old := (left(o.partition_name, 50) || '_pgr_orig')::name;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        IF v_dist THEN
            -- Citus: writes to this (old) partition wait while it is copied; the rest of the table
            -- is not locked until the swap below. The copy is distributed like the original,
            -- colocated with the table, so that it can be attached.
            EXECUTE format('LOCK TABLE %I.%I IN SHARE MODE', o.partition_schema, o.partition_name);
            EXECUTE format('DROP TABLE IF EXISTS %I.%I', o.partition_schema, o.copy_name);
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE'
                           ' INCLUDING COMMENTS INCLUDING GENERATED)', o.partition_schema, o.copy_name,
                           o.partition_schema, o.partition_name);
            EXECUTE 'SELECT create_distributed_table($1, $2, colocate_with => $3)'
                USING format('%I.%I', o.partition_schema, o.copy_name),
                      pgretention._distribution_column(v_parent::regclass), v_parent;
            PERFORM pgretention._anon_fill(p_op, true);
        END IF;
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_parent, o.partition_schema, o.partition_name);
        EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', o.partition_schema, o.partition_name, v_old);
        EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', o.partition_schema, o.copy_name, o.partition_name);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)', v_parent,
                       o.partition_schema, o.partition_name, o.range_from, o.range_to);
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
    -- same owner and grants as the original
    SELECT pg_get_userbyid(relowner) INTO v_owner FROM pg_class WHERE oid = format('%I.%I', o.partition_schema, v_old)::regclass;
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', o.partition_schema, o.partition_name, v_owner);
    FOR g IN SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
             FROM pg_class k CROSS JOIN LATERAL aclexplode(k.relacl) a
             WHERE k.oid = format('%I.%I', o.partition_schema, v_old)::regclass AND a.grantee <> k.relowner LOOP
        EXECUTE format('GRANT %s ON %I.%I TO %s', g.privilege_type, o.partition_schema, o.partition_name, g.who);
    END LOOP;
    UPDATE pgretention.anon_op SET state = 'swapped', copy_name = v_old WHERE id = p_op;
    RETURN true;
END
$$;

-- Step 4: drop the original (detached; no application waits on it) and audit.
CREATE OR REPLACE FUNCTION pgretention._anon_finish(p_op bigint)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o pgretention.anon_op;
    t pgretention.managed_table;
BEGIN
    SELECT * INTO o FROM pgretention.anon_op WHERE id = p_op FOR UPDATE;
    IF o.state <> 'swapped' THEN
        RETURN o.state = 'done';
    END IF;
    SELECT * INTO t FROM pgretention.managed_table WHERE id = o.table_id;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('DROP TABLE IF EXISTS %I.%I', o.partition_schema, o.copy_name);
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
    UPDATE pgretention.anon_op SET state = 'done', done_at = clock_timestamp() WHERE id = p_op;
    PERFORM pgretention._audit('partition.anonymise', format('%I.%I', t.table_schema, t.table_name),
        jsonb_build_object('class', o.class_name, 'partition', o.partition_name, 'from', o.range_from, 'to', o.range_to,
                           'rows', o.rows_copied,
                           'rules', (SELECT jsonb_object_agg(r.column_name, r.method) FROM pgretention.anon_rule r
                                     WHERE r.table_id = t.id)));
    RETURN true;
END
$$;

-- Operations to continue: every non-done anon_op, oldest first.
CREATE OR REPLACE FUNCTION pgretention._anon_open_ops()
RETURNS SETOF bigint
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT id FROM pgretention.anon_op WHERE state <> 'done' ORDER BY id $$;

-- Run the anonymiser: continue unfinished rewrites, then anonymise every due partition.
-- A procedure (commits after each step); privileged steps are the functions above.
CREATE OR REPLACE PROCEDURE pgretention.run_anonymiser(p_now timestamptz DEFAULT NULL, p_table text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, pg_catalog.now());
    v_target record;
    v_leaf record;
    v_op bigint;
    v_tries int;
    v_done int := 0;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE NOTICE 'pgretention: this server is a standby; nothing to anonymise';
        RETURN;
    END IF;
    PERFORM pgretention._check_reference_time(p_now);
    IF NOT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtext('pgretention.anonymise')) THEN
        RAISE NOTICE 'pgretention: another anonymiser run is active; nothing to do';
        RETURN;
    END IF;
    FOR v_op IN SELECT * FROM pgretention._anon_open_ops() LOOP
        CALL pgretention._anon_drive(v_op);
    END LOOP;
    FOR v_target IN SELECT * FROM pgretention._run_targets(p_table) LOOP
        FOR v_leaf IN SELECT * FROM pgretention._anon_due(v_target.table_id, v_target.class_name, v_now) LOOP
            v_op := NULL;
            FOR v_tries IN 1 .. 50 LOOP
                BEGIN
                    v_op := pgretention._anon_prepare(v_target.table_id, v_target.class_name, v_leaf.leaf, v_now);
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'pgretention: anonymising % failed: %', v_leaf.leaf_name, SQLERRM;
                    v_op := -1;
                END;
                COMMIT;
                EXIT WHEN v_op IS NOT NULL;
                PERFORM pg_catalog.pg_sleep(least(0.01 * 2 ^ v_tries, 0.5));
            END LOOP;
            CONTINUE WHEN v_op IS NULL OR v_op < 0;
            CALL pgretention._anon_drive(v_op);
            v_done := v_done + 1;
            RAISE NOTICE 'pgretention: anonymised partition % of %', v_leaf.leaf_name, v_target.table_name;
        END LOOP;
    END LOOP;
    PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('pgretention.anonymise'));
    RAISE NOTICE 'pgretention: anonymiser: % partitions rewritten', v_done;
END
$$;

-- Copy, swap (with bounded lock waits and backoff) and finish one operation. A failing step is
-- reported as a warning and left for the next run; the partition stays as it was.
CREATE OR REPLACE PROCEDURE pgretention._anon_drive(p_op bigint)
LANGUAGE plpgsql
AS $$
DECLARE
    v_ok boolean := false;
    v_sleep float8 := 0.01;
BEGIN
    BEGIN
        PERFORM pgretention._anon_copy(p_op);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgretention: anonymisation % (copy) failed: %', p_op, SQLERRM;
        RETURN;
    END;
    COMMIT;
    FOR i IN 1 .. 3000 LOOP
        BEGIN
            v_ok := pgretention._anon_swap(p_op);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pgretention: anonymisation % (swap) failed: %', p_op, SQLERRM;
            RETURN;
        END;
        COMMIT;
        EXIT WHEN v_ok;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := least(v_sleep * 2, 0.5);
    END LOOP;
    IF NOT v_ok THEN
        RAISE NOTICE 'pgretention: anonymisation swap of operation % left for the next run', p_op;
        RETURN;
    END IF;
    FOR i IN 1 .. 50 LOOP
        v_ok := pgretention._anon_finish(p_op);
        COMMIT;
        EXIT WHEN v_ok;
        PERFORM pg_catalog.pg_sleep(0.1);
    END LOOP;
END
$$;
