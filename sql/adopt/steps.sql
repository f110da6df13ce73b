-- Adoption's steps, each its own short transaction (the design: adopt/adopt.sql): prepare (CHECK
-- NOT VALID), validate, abandon or cancel, and the swap. A step that needs the table's lock returns
-- NULL when it was not granted (core/batches.sql).

-- Step 1: record the adoption and add the CHECK constraint NOT VALID. Returns the adoption id,
-- or NULL when the table's lock was not granted within lock_timeout (retry).
CREATE OR REPLACE FUNCTION pgretention._adopt_prepare(
    p_table text, p_time_column text, p_drop_after text, p_interval text, p_premake int,
    p_time_zone text, p_key text, p_class_column text, p_now timestamptz)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v jsonb := pgretention._adopt_inspect(p_table, p_time_column, p_interval, p_time_zone, p_key, p_class_column);
    v_cut record;
    v_con text;
    v_id int;
    e jsonb;
BEGIN
    PERFORM pgretention._parse_interval(format('drop_after of table %s', v ->> 'qualified'), p_drop_after);
    IF p_premake IS NULL OR p_premake < 1 OR p_premake > 1000 THEN
        RAISE EXCEPTION 'premake of table % must be between 1 and 1000', v ->> 'qualified'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v ->> 'time_type' IN ('timestamptz', 'epoch') AND p_time_zone <> 'UTC' THEN
        RAISE EXCEPTION 'time zone applies to timestamp and date columns only; % of % is %',
            quote_ident(p_time_column), v ->> 'qualified', v ->> 'time_type' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(v -> 'key_indexes') WHERE value ->> 'index' IS NULL LOOP
        RAISE EXCEPTION 'key add_time for table % needs a unique index on (%) first', v ->> 'qualified',
            (SELECT string_agg(quote_ident(x), ', ') FROM jsonb_array_elements_text(e -> 'columns') x)
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = e ->> 'statement';
    END LOOP;
    v_cut := pgretention._adopt_cutover(v ->> 'time_type', p_time_zone, (v ->> 'interval')::interval, coalesce(p_now, now()));
    v_con := left(v ->> 'table', 50) || '_adopt_check';
    IF to_regclass(format('%I.%I', v ->> 'schema', v ->> 'historical')) IS NOT NULL THEN
        RAISE EXCEPTION 'table %.% exists already: adopt needs that name for the historical partition of %',
            quote_ident(v ->> 'schema'), quote_ident(v ->> 'historical'), v ->> 'qualified' USING ERRCODE = 'duplicate_table';
    END IF;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L) NOT VALID',
                       v ->> 'qualified', v_con, p_time_column, p_time_column, v ->> 'lower', p_time_column, v_cut.cutover);
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    INSERT INTO pgretention.adoption (table_schema, table_name, time_column, time_type, time_zone, historical_name,
        constraint_name, cutover, cutover_at, key_choice, state, settings, details)
    VALUES (v ->> 'schema', v ->> 'table', p_time_column, v ->> 'time_type', p_time_zone, v ->> 'historical',
        v_con, v_cut.cutover, v_cut.cutover_at, v ->> 'key_choice', 'prepared',
        jsonb_build_object('drop_after', p_drop_after, 'interval', p_interval, 'premake', p_premake),
        jsonb_build_object('inspected', v))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- Step 2: validate the CHECK constraint (SHARE UPDATE EXCLUSIVE: the application goes on).
CREATE OR REPLACE FUNCTION pgretention._adopt_validate(p_id int)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    d pgretention.adoption;
    v_qual text;
    v_nulls boolean;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE id = p_id AND state = 'prepared' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'adoption % is not waiting for validation', p_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    v_qual := format('%I.%I', d.table_schema, d.table_name);
    BEGIN
        EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', v_qual, d.constraint_name);
    EXCEPTION WHEN check_violation THEN
        EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I IS NULL)', v_qual, d.time_column) INTO v_nulls;
        IF v_nulls THEN
            RAISE EXCEPTION 'table % has rows without a value in its time column %: a time partition cannot hold them',
                v_qual, quote_ident(d.time_column) USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'give them a time (UPDATE ... SET col = <time> WHERE col IS NULL) or delete them, make the application always set it (e.g. DEFAULT now()), and adopt again';
        END IF;
        RAISE EXCEPTION 'table % has rows dated at or after the cut-over % in column %', v_qual, d.cutover,
            quote_ident(d.time_column) USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = CASE WHEN d.time_type = 'epoch' THEN 'epoch values must be seconds (milliseconds are not supported); correct or delete the future-dated rows and adopt again'
                        ELSE 'correct or delete the future-dated rows and adopt again' END;
    END;
    UPDATE pgretention.adoption SET state = 'validated' WHERE id = p_id;
END
$$;

-- Give up an adoption that has not swapped yet: its CHECK constraint goes, nothing else changed.
CREATE OR REPLACE FUNCTION pgretention._adopt_abandon(p_id int, p_reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d pgretention.adoption;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE id = p_id AND state IN ('prepared', 'validated') FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF to_regclass(format('%I.%I', d.table_schema, d.table_name)) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %I.%I DROP CONSTRAINT IF EXISTS %I', d.table_schema, d.table_name, d.constraint_name);
    END IF;
    UPDATE pgretention.adoption SET state = 'cancelled', finished_at = now(),
        details = details || jsonb_build_object('reason', p_reason)
    WHERE id = p_id;
    PERFORM pgretention._audit('table.adopt', format('%I.%I', d.table_schema, d.table_name),
        jsonb_build_object('adoption', p_id, 'cancelled', p_reason), 'failed');
END
$$;

CREATE OR REPLACE FUNCTION pgretention.adopt_cancel(p_table text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_id int;
BEGIN
    SELECT id INTO v_id FROM pgretention.adoption
    WHERE table_schema = v_name.schema_name AND table_name = v_name.table_name AND state IN ('prepared', 'validated');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no adoption of table %.% is under way', v_name.schema_name, v_name.table_name
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM pgretention._set_lock_timeout();
    PERFORM pgretention._adopt_abandon(v_id, 'cancelled by ' || current_user);
END
$$;

-- The part of a server-generated index definition after "ON <table> ": "USING btree (...) ...".
CREATE OR REPLACE FUNCTION pgretention._adopt_index_tail(p_index regclass, p_table text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_def text := pg_get_indexdef(p_index);
    v_pos int := position(format(' ON %s ', p_table) IN v_def);
BEGIN
    IF v_pos = 0 THEN
        RAISE EXCEPTION 'cannot read the definition of index %', p_index USING ERRCODE = 'internal_error';
    END IF;
    RETURN substr(v_def, v_pos + length(format(' ON %s ', p_table)));
END
$$;

-- Step 3: the swap, in one short transaction. Returns the managed table id, or NULL when the
-- table's lock was not granted within lock_timeout (nothing changed; retry).
CREATE OR REPLACE FUNCTION pgretention._adopt_swap(p_id int)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    d pgretention.adoption;
    v_qual text;
    v_hist text;
    v_rel regclass;
    v_owner name;
    v_comment text;
    v_triggers text[];
    v_views jsonb;
    v_pubs name[];
    v_sql text[] := '{}';
    v_stmt text;
    r record;
    v_tid int;
    v_cols text;
    v_ncon int := 0;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE id = p_id AND state = 'validated' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'adoption % is not validated', p_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    v_qual := format('%I.%I', d.table_schema, d.table_name);
    v_hist := format('%I.%I', d.table_schema, d.historical_name);
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_qual);
    EXCEPTION WHEN lock_not_available THEN
        RETURN NULL;
    END;
    v_rel := v_qual::regclass;
    -- capture what must move to the new table (texts are schema-qualified: search_path is pg_catalog)
    SELECT pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class') INTO v_owner, v_comment
    FROM pg_class c WHERE c.oid = v_rel;
    v_triggers := ARRAY(SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = v_rel AND NOT t.tgisinternal
                        ORDER BY t.tgname);
    v_views := pgretention._adopt_views(v_rel);
    v_pubs := ARRAY(SELECT p.pubname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                    WHERE pr.prrelid = v_rel ORDER BY p.pubname);
    -- the new table's constraints and indexes, as they read on the old one
    FOR r IN SELECT c.conname, pg_get_constraintdef(c.oid) AS def, c.contype FROM pg_constraint c
             WHERE c.conrelid = v_rel AND c.contype IN ('c', 'f') AND c.conname <> d.constraint_name ORDER BY c.conname LOOP
        v_sql := v_sql || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_qual, r.conname, r.def);
    END LOOP;
    FOR r IN SELECT i.indexrelid::regclass AS idx, i.indisunique, c.contype, c.oid AS con,
                    pg_get_constraintdef(c.oid) AS condef,
                    ARRAY(SELECT x.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY u(n, o)
                          JOIN pg_attribute x ON x.attrelid = v_rel AND x.attnum = u.n ORDER BY u.o) AS cols,
                    i.indexprs IS NOT NULL OR i.indpred IS NOT NULL AS partial
             FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = v_rel
             WHERE i.indrelid = v_rel AND i.indisvalid ORDER BY i.indexrelid LOOP
        IF NOT r.indisunique THEN
            v_sql := v_sql || format('CREATE INDEX ON %s %s', v_qual, pgretention._adopt_index_tail(r.idx, v_qual));
        ELSIF d.time_column = ANY (r.cols) AND NOT r.partial THEN
            IF r.con IS NOT NULL THEN
                -- the new table takes the same key; the old one's index is attached to it
                v_sql := v_sql || format('ALTER TABLE %s ADD %s', v_qual, r.condef);
            ELSIF d.key_choice = 'add_time' AND r.cols[cardinality(r.cols)] = d.time_column
                  AND EXISTS (SELECT FROM jsonb_array_elements(d.details -> 'inspected' -> 'key_indexes') e
                              WHERE e ->> 'index' = (SELECT relname FROM pg_class WHERE oid = r.idx)) THEN
                -- built for key add_time: becomes a unique constraint on both tables
                v_cols := (SELECT string_agg(quote_ident(x), ', ') FROM unnest(r.cols) x);
                v_ncon := v_ncon + 1;
                EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE USING INDEX %I', v_qual,
                               (SELECT relname FROM pg_class WHERE oid = r.idx),
                               (SELECT relname FROM pg_class WHERE oid = r.idx));
                v_sql := v_sql || format('ALTER TABLE %s ADD UNIQUE (%s)', v_qual, v_cols);
            ELSE
                v_sql := v_sql || format('CREATE UNIQUE INDEX ON %s %s', v_qual, pgretention._adopt_index_tail(r.idx, v_qual));
            END IF;
        END IF;
        -- unique keys without the time column stay on the historical partition only (key local,
        -- or extended by add_time above)
    END LOOP;
    -- the swap
    EXECUTE format('ALTER TABLE %s RENAME TO %I', v_qual, d.historical_name);
    FOR i IN 1 .. coalesce(array_length(v_triggers, 1), 0) LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', (SELECT t.tgname FROM pg_trigger t WHERE t.tgrelid = v_rel AND NOT t.tgisinternal
                                                 ORDER BY t.tgname LIMIT 1), v_hist);
    END LOOP;
    EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED INCLUDING STORAGE'
                   ' INCLUDING COMMENTS INCLUDING COMPRESSION INCLUDING STATISTICS) PARTITION BY RANGE (%I)',
                   v_qual, v_hist, d.time_column);
    EXECUTE format('ALTER TABLE %s OWNER TO %I', v_qual, v_owner);
    FOREACH v_stmt IN ARRAY v_sql LOOP
        EXECUTE v_stmt;
    END LOOP;
    FOREACH v_stmt IN ARRAY v_triggers LOOP
        EXECUTE v_stmt;  -- server-generated CREATE TRIGGER ... ON <schema>.<table>: now the new table
    END LOOP;
    IF v_comment IS NOT NULL THEN
        EXECUTE format('COMMENT ON TABLE %s IS %L', v_qual, v_comment);
    END IF;
    FOR r IN SELECT a.privilege_type, a.grantee, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = v_rel AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON %s TO %s%s', r.privilege_type, v_qual,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,
                       CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    -- register: pg_partman premakes partitions from the cut-over and a default partition
    v_tid := pgretention._register_table(d.table_schema, d.table_name, d.time_column, d.settings ->> 'interval',
        jsonb_build_object('default', jsonb_build_object('drop_after', d.settings ->> 'drop_after')),
        NULL, NULL, (d.settings ->> 'premake')::int, d.time_zone, NULL, NULL, 'drop', NULL, 'keep');
    PERFORM pgretention._setup_classes(v_tid,
        jsonb_build_object('default', jsonb_build_object('drop_after', d.settings ->> 'drop_after')), d.cutover_at);
    IF EXISTS (SELECT FROM pgretention._leaves(v_tid, 'default') l WHERE NOT l.is_default AND l.lower_abs < d.cutover_at) THEN
        RAISE EXCEPTION 'pg_partman started the partitions of % before the cut-over %', v_qual, d.cutover
            USING ERRCODE = 'internal_error';
    END IF;
    -- identity continues where it was, in the new table's sequence; the old table gives its own identity
    -- up (PostgreSQL 17 attaches no table with an identity column of its own, and its partitions then
    -- use the parent's; on 15 and 16 rows come in through the parent too). adopt_undo gives it back.
    FOR r IN SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = v_rel AND a.attidentity <> '' AND NOT a.attisdropped ORDER BY a.attnum LOOP
        EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s',
                       pg_get_serial_sequence(v_qual, r.attname), pg_get_serial_sequence(v_hist, r.attname));
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP IDENTITY', v_hist, r.attname);
    END LOOP;
    -- the old table becomes the historical partition: its validated CHECK implies the bound (no scan)
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', v_qual, v_hist,
                   d.details -> 'inspected' ->> 'lower', d.cutover);
    -- sequences of serial columns now belong to the new table
    FOR r IN SELECT s.oid::regclass AS seq, a.attname FROM pg_depend dp
             JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
             JOIN pg_attribute a ON a.attrelid = dp.refobjid AND a.attnum = dp.refobjsubid
             WHERE dp.classid = 'pg_class'::regclass AND dp.refobjid = v_rel AND dp.deptype = 'a' LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', r.seq, v_qual, r.attname);
    END LOOP;
    PERFORM pgretention._adopt_recreate_views(v_views);  -- with their options (security_invoker, ...)
    FOR i IN 1 .. coalesce(array_length(v_pubs, 1), 0) LOOP
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', v_pubs[i], v_hist);
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', v_pubs[i], v_qual);
    END LOOP;
    UPDATE pgretention.adoption SET state = 'adopted', table_id = v_tid, adopted_at = now(),
        details = details || jsonb_build_object('triggers', to_jsonb(v_triggers), 'views', v_views,
                                                'publications', to_jsonb(v_pubs), 'owner', v_owner)
    WHERE id = p_id;
    PERFORM pgretention._audit('table.adopt', v_qual, jsonb_build_object('adoption', p_id,
        'historical_partition', d.historical_name, 'cutover', d.cutover, 'drop_after', d.settings ->> 'drop_after',
        'interval', d.settings ->> 'interval', 'key_choice', d.key_choice, 'views', jsonb_array_length(v_views),
        'triggers', coalesce(array_length(v_triggers, 1), 0)));
    RETURN v_tid;
END
$$;
