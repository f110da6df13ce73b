-- Adoption, what it needs to know before it changes anything: the cut-over, every shape of table it
-- cannot convert (refused with the way out), the unique indexes key add_time needs, and the plan.
-- The design of adoption: adopt/adopt.sql.

-- The first partition boundary pg_partman will use at or after p_at: pg_partman aligns the start
-- of a partition set to the hour, day, week, month or year depending on the interval.
CREATE OR REPLACE FUNCTION pgretention._adopt_cutover(
    p_type text, p_zone text, p_interval interval, p_now timestamptz,
    OUT cutover text, OUT cutover_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, YMD'
AS $$
DECLARE
    v_unit text;
    v_wall timestamp;
BEGIN
    v_unit := CASE WHEN p_interval >= interval '1 year' THEN 'year'
                   WHEN p_interval >= interval '1 month' THEN 'month'
                   WHEN p_interval >= interval '1 week' THEN 'week'
                   WHEN p_interval >= interval '1 day' THEN 'day'
                   ELSE 'hour' END;
    -- at least a day (or one interval) ahead: rows the application writes until the swap must
    -- still fit under the historical partition's upper bound
    v_wall := (p_now + greatest(p_interval, interval '1 day')) AT TIME ZONE CASE WHEN p_type IN ('timestamptz', 'epoch') THEN 'UTC' ELSE p_zone END;
    v_wall := date_trunc(v_unit, v_wall) + ('1 ' || v_unit)::interval;
    IF p_type = 'date' THEN
        cutover := v_wall::date::text;
    ELSIF p_type = 'epoch' THEN
        cutover := extract(epoch FROM v_wall AT TIME ZONE 'UTC')::bigint::text;
    ELSE
        cutover := to_char(v_wall, 'YYYY-MM-DD HH24:MI:SS') || CASE WHEN p_type = 'timestamptz' THEN '+00' ELSE '' END;
    END IF;
    cutover_at := pgretention._to_abs(cutover, p_type, p_zone);
END
$$;

-- Everything adopt needs to know about a table, checked. Raises (naming the table and the way out)
-- for every shape it cannot convert, and for a table the caller may not act on; changes nothing.
CREATE OR REPLACE FUNCTION pgretention._adopt_inspect(
    p_table text, p_time_column text, p_interval text, p_time_zone text, p_key text, p_class_column text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name record := pgretention._split_name(p_table);
    v_qual text := format('%I.%I', v_name.schema_name, v_name.table_name);
    v_rel regclass;
    k record;
    a record;
    v_type text;
    v_list text;
    v_keys jsonb := '[]';
    v_need jsonb := '[]';
    v_cols text[];
    v_idx text;
    v_interval interval;
    v_bad text[] := '{}';
BEGIN
    v_rel := pgretention._user_table(p_table);  -- a table the caller may act on (core/names.sql)
    SELECT c.relkind, c.relpersistence, c.relispartition, c.relrowsecurity INTO k FROM pg_class c WHERE c.oid = v_rel;
    IF pgretention._is_distributed(v_rel) THEN
        -- the online conversion swaps tables and copies rows by address: not on Citus
        RAISE EXCEPTION 'table % is a Citus table: adopt converts local tables only; create a distributed,'
            ' time-partitioned table with table_create(..., p_distribute_by => ...) and move the data into it', v_qual
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM pgretention.managed_table m WHERE m.table_schema = v_name.schema_name
               AND m.table_name = v_name.table_name) THEN
        RAISE EXCEPTION 'table % is already managed by pgretention', v_qual USING ERRCODE = 'duplicate_object';
    END IF;
    IF EXISTS (SELECT FROM pgretention.adoption d WHERE d.table_schema = v_name.schema_name
               AND d.table_name = v_name.table_name AND d.state IN ('prepared', 'validated')) THEN
        RAISE EXCEPTION 'an adoption of table % is already under way', v_qual
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('wait for it, or SELECT pgretention.adopt_cancel(%L)', v_qual);
    END IF;
    IF k.relkind = 'p' THEN
        IF pg_get_partkeydef(v_rel) = format('RANGE (%s)', quote_ident(coalesce(p_time_column, ''))) THEN
            RAISE EXCEPTION 'table % is already partitioned by % : use table_manage to take it under management',
                v_qual, pg_get_partkeydef(v_rel) USING ERRCODE = 'wrong_object_type';
        END IF;
        RAISE EXCEPTION 'table % is already partitioned by % : adopt converts plain tables only',
            v_qual, pg_get_partkeydef(v_rel) USING ERRCODE = 'wrong_object_type';
    END IF;
    IF k.relkind <> 'r' THEN
        RAISE EXCEPTION '% is not a table', v_qual USING ERRCODE = 'wrong_object_type';
    END IF;
    IF k.relispartition OR EXISTS (SELECT FROM pg_inherits WHERE inhrelid = v_rel OR inhparent = v_rel) THEN
        RAISE EXCEPTION 'table % takes part in inheritance or partitioning: adopt converts plain tables only', v_qual
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF k.relpersistence = 't' THEN
        RAISE EXCEPTION 'table % is temporary', v_qual USING ERRCODE = 'wrong_object_type';
    END IF;
    -- the time column
    PERFORM pgretention._check_ident('time column', p_time_column);
    PERFORM pgretention._column_type(v_rel, p_time_column);  -- it exists, or an error naming it
    SELECT a2.attnum, a2.attnotnull, format_type(a2.atttypid, NULL) AS typ, a2.attgenerated INTO a
    FROM pg_attribute a2 WHERE a2.attrelid = v_rel AND a2.attname = p_time_column;
    v_type := CASE a.typ WHEN 'timestamp with time zone' THEN 'timestamptz' WHEN 'timestamp without time zone' THEN 'timestamp'
                         WHEN 'date' THEN 'date' WHEN 'bigint' THEN 'epoch' WHEN 'integer' THEN 'epoch' END;
    IF v_type IS NULL AND a.typ IN ('smallint', 'numeric', 'double precision', 'real') THEN
        RAISE EXCEPTION 'column % of table % is % : epoch time is supported in bigint and integer columns (seconds)',
            quote_ident(p_time_column), v_qual, a.typ USING ERRCODE = 'feature_not_supported',
            HINT = 'change the column to bigint (ALTER TABLE ... ALTER COLUMN ... TYPE bigint rewrites the table), or add a timestamptz column filled by the application or a trigger, backfill it, then adopt on that column';
    END IF;
    IF v_type IS NULL THEN
        RAISE EXCEPTION 'column % of table % is not a time column (timestamptz, timestamp, date or epoch seconds), it is %',
            quote_ident(p_time_column), v_qual, a.typ USING ERRCODE = 'datatype_mismatch';
    END IF;
    IF a.attgenerated <> '' THEN
        RAISE EXCEPTION 'column % of table % is generated: a partition key cannot be', quote_ident(p_time_column), v_qual
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF p_class_column IS NOT NULL THEN
        RAISE EXCEPTION 'adopt converts table % with one retention class; a class column is not supported yet', v_qual
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'adopt with one class (the longest period) now, or create a managed table with classes (table_create) and copy the rows into it';
    END IF;
    v_interval := pgretention._parse_interval(format('partition interval of table %s', v_qual), p_interval);
    IF p_key IS NOT NULL AND p_key NOT IN ('local', 'add_time') THEN
        RAISE EXCEPTION 'key choice for table % must be local or add_time, got %', v_qual, quote_literal(p_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_time_zone IS NULL OR NOT EXISTS (SELECT FROM pg_timezone_names WHERE name = p_time_zone) THEN
        RAISE EXCEPTION 'unknown time zone % for table %', coalesce(quote_literal(p_time_zone), 'NULL'), v_qual
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- shapes a partitioned table cannot have
    SELECT string_agg(format('%s (%I)', c.conrelid::regclass, c.conname), ', ' ORDER BY c.conname) INTO v_list
    FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = v_rel;
    IF v_list IS NOT NULL THEN
        RAISE EXCEPTION 'foreign keys reference table %: %', v_qual, v_list USING ERRCODE = 'feature_not_supported',
            HINT = 'a partitioned table can be referenced only through a key that includes its time column: drop these foreign keys (ALTER TABLE ... DROP CONSTRAINT), adopt, and recreate them with the time column if needed';
    END IF;
    SELECT string_agg(DISTINCT d.refobjid::regclass::text, ', ') INTO v_list
    FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = v_rel AND v.oid <> v_rel AND v.relkind = 'm';
    IF v_list IS NOT NULL THEN
        SELECT string_agg(DISTINCT v.oid::regclass::text, ', ') INTO v_list
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = v_rel AND v.relkind = 'm';
        RAISE EXCEPTION 'materialized views depend on table %: %', v_qual, v_list USING ERRCODE = 'feature_not_supported',
            HINT = 'drop them, adopt, and create them again (they cannot be re-pointed in place)';
    END IF;
    IF EXISTS (SELECT FROM pg_rewrite r WHERE r.ev_class = v_rel AND r.rulename <> '_RETURN') THEN
        RAISE EXCEPTION 'table % has rules: %', v_qual,
            (SELECT string_agg(quote_ident(r.rulename), ', ') FROM pg_rewrite r WHERE r.ev_class = v_rel)
            USING ERRCODE = 'feature_not_supported', HINT = 'drop the rules (or replace them by triggers) and adopt again';
    END IF;
    IF k.relrowsecurity OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = v_rel) THEN
        RAISE EXCEPTION 'table % has row-level security: not supported by adopt yet', v_qual
            USING ERRCODE = 'feature_not_supported', HINT = 'disable row-level security and drop the policies, adopt, then define them on the adopted table';
    END IF;
    IF EXISTS (SELECT FROM pg_constraint c WHERE c.conrelid = v_rel AND c.contype = 'x') THEN
        RAISE EXCEPTION 'table % has exclusion constraints: not supported by adopt', v_qual
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = v_rel AND NOT t.tgisinternal AND t.tgconstraint <> 0) THEN
        RAISE EXCEPTION 'table % has constraint triggers: not supported by adopt', v_qual
            USING ERRCODE = 'feature_not_supported', HINT = 'drop them, adopt, and create them on the adopted table';
    END IF;
    -- unique keys: a partitioned table's keys must include the partition key
    FOR k IN SELECT i.indexrelid, i.indisprimary, c.oid AS con, c.conname, ic.relname AS idxname,
                    ARRAY(SELECT x.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY u(n, o)
                          JOIN pg_attribute x ON x.attrelid = v_rel AND x.attnum = u.n ORDER BY u.o) AS cols,
                    i.indexprs IS NOT NULL OR i.indpred IS NOT NULL AS partial
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = v_rel AND c.contype IN ('p', 'u')
             WHERE i.indrelid = v_rel AND i.indisunique ORDER BY ic.relname LOOP
        v_keys := v_keys || jsonb_build_object('index', k.idxname, 'constraint', k.conname, 'primary', k.indisprimary,
                                               'columns', to_jsonb(k.cols), 'has_time', p_time_column = ANY (k.cols));
        CONTINUE WHEN p_time_column = ANY (k.cols) AND NOT k.partial;
        IF p_key IS NULL THEN
            v_bad := v_bad || format('%s %s on (%s)', CASE WHEN k.indisprimary THEN 'primary key' ELSE 'unique key' END,
                                     quote_ident(k.idxname), array_to_string(k.cols, ', '));
            CONTINUE;
        END IF;
        IF p_key = 'add_time' THEN
            IF k.partial THEN
                RAISE EXCEPTION 'unique index % of table % is partial or on expressions: key add_time cannot extend it',
                    quote_ident(k.idxname), v_qual USING ERRCODE = 'feature_not_supported', HINT = 'use key local';
            END IF;
            v_cols := k.cols::text[] || p_time_column;
            SELECT ic.relname INTO v_idx FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
            WHERE i.indrelid = v_rel AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
              AND ARRAY(SELECT x.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY u(n, o)
                        JOIN pg_attribute x ON x.attrelid = v_rel AND x.attnum = u.n ORDER BY u.o) = v_cols
            LIMIT 1;
            v_need := v_need || jsonb_build_object('for', k.idxname, 'columns', to_jsonb(v_cols), 'index', v_idx,
                'statement', format('CREATE UNIQUE INDEX CONCURRENTLY %I ON %s (%s)',
                                    left(k.idxname, 50) || '_adopt', v_qual,
                                    (SELECT string_agg(quote_ident(x), ', ') FROM unnest(v_cols) x)));
        END IF;
    END LOOP;
    IF cardinality(v_bad) > 0 THEN
        RAISE EXCEPTION 'table % has % without its time column %: a partitioned table''s keys must include it',
            v_qual, array_to_string(v_bad, ', '), quote_ident(p_time_column) USING ERRCODE = 'feature_not_supported',
            HINT = 'choose: key "local" keeps them unique on the historical partition only (new rows are not checked), key "add_time" makes (columns + time column) the table''s keys after unique indexes on them are built concurrently; no constraint is dropped';
    END IF;
    -- published updates and deletes need a replica identity: only a primary key with the time column gives one
    SELECT string_agg(p.pubname, ', ' ORDER BY p.pubname) INTO v_list FROM pg_publication_rel pr
    JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = v_rel AND (p.pubupdate OR p.pubdelete);
    IF v_list IS NOT NULL AND NOT EXISTS (SELECT FROM jsonb_array_elements(v_keys) e
                                          WHERE (e ->> 'primary')::boolean AND (e ->> 'has_time')::boolean) THEN
        RAISE EXCEPTION 'table % is published with updates and deletes (%) but would have no primary key with its time column as replica identity',
            v_qual, v_list USING ERRCODE = 'feature_not_supported',
            HINT = 'give it a primary key that includes the time column, or publish inserts only, or take it out of the publication (ALTER PUBLICATION ... DROP TABLE), adopt, and add it back';
    END IF;
    RETURN jsonb_build_object(
        'schema', v_name.schema_name, 'table', v_name.table_name, 'qualified', v_qual, 'oid', v_rel::oid,
        'time_type', v_type, 'time_not_null', a.attnotnull, 'interval', v_interval,
        -- the historical partition's lower bound: below every value of the column
        'lower', CASE WHEN v_type <> 'epoch' THEN '-infinity' WHEN a.typ = 'bigint' THEN '-9223372036854775808'
                      ELSE '-2147483648' END,
        'keys', v_keys, 'key_choice', CASE WHEN jsonb_array_length(v_keys) = 0 THEN 'none'
                                           WHEN NOT EXISTS (SELECT FROM jsonb_array_elements(v_keys) e
                                                            WHERE NOT (e ->> 'has_time')::boolean) THEN 'includes_time'
                                           ELSE p_key END,
        'key_indexes', v_need,
        'views', coalesce((SELECT jsonb_agg(DISTINCT v.oid::regclass::text)
                           FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
                           WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = v_rel AND v.oid <> v_rel), '[]'),
        'triggers', coalesce((SELECT jsonb_agg(t.tgname ORDER BY t.tgname) FROM pg_trigger t
                              WHERE t.tgrelid = v_rel AND NOT t.tgisinternal), '[]'),
        'publications', coalesce((SELECT jsonb_agg(p.pubname ORDER BY p.pubname) FROM pg_publication_rel pr
                                  JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = v_rel), '[]'),
        'historical', left(v_name.table_name, 54) || '_adopted');
END
$$;

-- Unique indexes a key choice add_time needs and that do not exist yet (the CLI builds them
-- with CREATE UNIQUE INDEX CONCURRENTLY before adopting).
CREATE OR REPLACE FUNCTION pgretention.adopt_missing_indexes(p_table text, p_time_column text)
RETURNS TABLE (table_schema text, table_name text, index_name text, columns text[], statement text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := pgretention._adopt_inspect(p_table, p_time_column, '1 day', 'UTC', 'add_time', NULL);
BEGIN
    RETURN QUERY
    SELECT v ->> 'schema', v ->> 'table', left(e ->> 'for', 50) || '_adopt', ARRAY(SELECT jsonb_array_elements_text(e -> 'columns')), e ->> 'statement'
    FROM jsonb_array_elements(v -> 'key_indexes') e WHERE e ->> 'index' IS NULL;
END
$$;

-- What adopt would do, step by step, with the locks each step takes. Changes nothing.
CREATE OR REPLACE FUNCTION pgretention.adopt_plan(
    p_table text, p_time_column text, p_drop_after text, p_interval text DEFAULT '1 day',
    p_premake int DEFAULT 4, p_time_zone text DEFAULT 'UTC', p_key text DEFAULT NULL,
    p_class_column text DEFAULT NULL, p_now timestamptz DEFAULT NULL)
RETURNS TABLE (step int, action text, locks text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v jsonb := pgretention._adopt_inspect(p_table, p_time_column, p_interval, p_time_zone, p_key, p_class_column);
    v_cut record;
    v_con text;
    e jsonb;
BEGIN
    PERFORM pgretention._parse_interval(format('drop_after of table %s', v ->> 'qualified'), p_drop_after);
    v_cut := pgretention._adopt_cutover(v ->> 'time_type', p_time_zone, (v ->> 'interval')::interval, coalesce(p_now, now()));
    v_con := left(v ->> 'table', 50) || '_adopt_check';
    step := 0;
    FOR e IN SELECT * FROM jsonb_array_elements(v -> 'key_indexes') WHERE value ->> 'index' IS NULL LOOP
        step := step + 1;
        action := (e ->> 'statement') || ' (done by the pgretention CLI; in SQL run it yourself first)';
        locks := 'SHARE UPDATE EXCLUSIVE on the table: inserts, updates and queries continue';
        RETURN NEXT;
    END LOOP;
    step := step + 1;
    action := format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L) NOT VALID',
                     v ->> 'qualified', v_con, p_time_column, p_time_column, v ->> 'lower', p_time_column, v_cut.cutover);
    locks := 'ACCESS EXCLUSIVE on the table for milliseconds, lock_timeout per attempt, retried with backoff;'
             ' from then on rows without time or dated at/after the cut-over are refused until the swap';
    RETURN NEXT;
    step := step + 1;
    action := format('ALTER TABLE %s VALIDATE CONSTRAINT %I (reads every row once)', v ->> 'qualified', v_con);
    locks := 'SHARE UPDATE EXCLUSIVE on the table: inserts, updates and queries continue';
    RETURN NEXT;
    step := step + 1;
    action := format('in one transaction: rename %s to %I; create %s PARTITION BY RANGE (%I) with the same columns,'
                     ' defaults, identity, checks, indexes, triggers (%s), grants, owner, comments, foreign keys;'
                     ' pg_partman premakes partitions from %s (premake %s, interval %s); attach %I FOR VALUES FROM'
                     ' (%L) TO (%L) without scanning; sequences re-owned, identity continued; views re-pointed'
                     ' (%s); publications (%s); key choice %s; register with drop_after %s',
                     v ->> 'qualified', v ->> 'historical', v ->> 'qualified', p_time_column,
                     coalesce((SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(v -> 'triggers') x), 'none'),
                     v_cut.cutover, p_premake, v ->> 'interval', v ->> 'historical', v ->> 'lower', v_cut.cutover,
                     coalesce((SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(v -> 'views') x), 'none'),
                     coalesce((SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(v -> 'publications') x), 'none'),
                     v ->> 'key_choice', p_drop_after);
    locks := 'ACCESS EXCLUSIVE on the table for the swap (catalog work only, no row is read or moved),'
             ' lock_timeout per attempt, retried with backoff; SHARE ROW EXCLUSIVE on tables its foreign keys reference';
    RETURN NEXT;
    step := step + 1;
    action := format('every run: delete rows of %I older than drop_after %s in batches of batch_size;'
                     ' drop the partition once %L is older than drop_after', v ->> 'historical', p_drop_after, v_cut.cutover);
    locks := 'ROW EXCLUSIVE on the historical partition (like the application''s own deletes)';
    RETURN NEXT;
END
$$;

-- The views that depend on a table, as adopt and adopt_undo re-create them after the swap: name,
-- definition, and the options (security_invoker, security_barrier, check_option) that CREATE OR
-- REPLACE VIEW would otherwise reset. CREATE OR REPLACE keeps a view's owner and privileges.
CREATE OR REPLACE FUNCTION pgretention._adopt_views(p_rel regclass)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('view', v.oid::regclass::text, 'def', pg_get_viewdef(v.oid),
                                                 'options', to_jsonb(coalesce(v.reloptions, '{}'))) ORDER BY v.oid), '[]')
    FROM pg_class v
    WHERE v.oid IN (SELECT rw.ev_class FROM pg_depend dp JOIN pg_rewrite rw ON rw.oid = dp.objid
                    WHERE dp.classid = 'pg_rewrite'::regclass AND dp.refobjid = p_rel AND rw.ev_class <> p_rel)
      AND v.relkind = 'v'
$$;

-- Re-create the views _adopt_views captured, on the table now under their name, with their options.
CREATE OR REPLACE FUNCTION pgretention._adopt_recreate_views(p_views jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb;
    v_with text;
BEGIN
    FOR r IN SELECT value FROM jsonb_array_elements(p_views) LOOP
        SELECT string_agg(format('%I = %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), ', ')
          INTO v_with FROM jsonb_array_elements_text(coalesce(r -> 'options', '[]')) o;
        EXECUTE format('CREATE OR REPLACE VIEW %s%s AS %s', r ->> 'view',
                       CASE WHEN v_with IS NOT NULL THEN format(' WITH (%s)', v_with) ELSE '' END, r ->> 'def');
    END LOOP;
END
$$;
