-- Online adoption: convert a plain table the application keeps writing to into a managed table
-- partitioned by time, under the same name (docs/adopt.md).
--
--   1. prepare   CHECK (time IS NOT NULL AND time >= '-infinity' AND time < cut-over) NOT VALID
--                (ACCESS EXCLUSIVE for milliseconds, bounded by lock_timeout, retried);
--   2. validate  VALIDATE CONSTRAINT (SHARE UPDATE EXCLUSIVE: inserts and queries go on);
--   3. swap      one short transaction (ACCESS EXCLUSIVE on the table, bounded by lock_timeout,
--                retried): rename the table to <table>_adopted, create the partitioned table under
--                the old name with the same columns, defaults, identity, checks, indexes, triggers,
--                grants, owner, comments, foreign keys and publications, let pg_partman premake
--                partitions from the cut-over on, attach the old table as the historical partition
--                FROM ('-infinity') TO (cut-over) (no scan: the validated CHECK implies the bound),
--                re-point dependent views.
-- The historical partition is then emptied in batches by every run as its rows expire
-- (_adopt_purge_batch) and dropped by the engine like any partition once the cut-over is past
-- drop_after. unadopt() gives back a plain table with all rows.

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
-- for every shape it cannot convert; changes nothing.
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
    v_rel := to_regclass(v_qual);
    IF v_rel IS NULL THEN
        RAISE EXCEPTION 'table % does not exist', v_qual USING ERRCODE = 'undefined_table';
    END IF;
    SELECT c.relkind, c.relpersistence, c.relispartition, c.relrowsecurity INTO k FROM pg_class c WHERE c.oid = v_rel;
    IF pgretention._is_distributed(v_rel) THEN
        -- the online conversion swaps tables and copies rows by address: not on Citus
        RAISE EXCEPTION 'table % is a Citus table: adopt converts local tables only; create a distributed,'
            ' time-partitioned table with create_table(..., p_distribute_by => ...) and move the data into it', v_qual
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
            RAISE EXCEPTION 'table % is already partitioned by % : use manage_table to take it under management',
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
    SELECT a2.attnum, a2.attnotnull, format_type(a2.atttypid, NULL) AS typ, a2.attgenerated INTO a
    FROM pg_attribute a2 WHERE a2.attrelid = v_rel AND a2.attname = p_time_column AND a2.attnum > 0 AND NOT a2.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column % does not exist in table %', quote_ident(p_time_column), v_qual
            USING ERRCODE = 'undefined_column';
    END IF;
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
                  HINT = 'adopt with one class (the longest period) now, or create a managed table with classes (create_table) and copy the rows into it';
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
    SELECT coalesce(jsonb_agg(jsonb_build_object('view', v.oid::regclass::text,
                                                 'def', pg_get_viewdef(v.oid))), '[]') INTO v_views
    FROM (SELECT DISTINCT v2.oid FROM pg_depend dp JOIN pg_rewrite rw ON rw.oid = dp.objid JOIN pg_class v2 ON v2.oid = rw.ev_class
          WHERE dp.classid = 'pg_rewrite'::regclass AND dp.refobjid = v_rel AND v2.oid <> v_rel AND v2.relkind = 'v') v;
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
    -- the old table becomes the historical partition: its validated CHECK implies the bound (no scan)
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', v_qual, v_hist,
                   d.details -> 'inspected' ->> 'lower', d.cutover);
    -- sequences of serial columns now belong to the new table; identity continues where it was
    FOR r IN SELECT s.oid::regclass AS seq, a.attname, a.attidentity FROM pg_depend dp
             JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
             JOIN pg_attribute a ON a.attrelid = dp.refobjid AND a.attnum = dp.refobjsubid
             WHERE dp.classid = 'pg_class'::regclass AND dp.refobjid = v_rel AND dp.deptype IN ('a', 'i') LOOP
        IF r.attidentity = '' THEN
            EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', r.seq, v_qual, r.attname);
        ELSE
            EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s',
                           pg_get_serial_sequence(v_qual, r.attname), r.seq);
        END IF;
    END LOOP;
    FOR r IN SELECT * FROM jsonb_array_elements(v_views) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', r.value ->> 'view', r.value ->> 'def');
    END LOOP;
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

-- Adopt a plain table online. A procedure: each step commits on its own so the application keeps
-- writing (see the top of this file); lock waits are bounded and retried like the run's.
CREATE OR REPLACE PROCEDURE pgretention.adopt(
    p_table text,
    p_time_column text,
    p_drop_after text,
    p_interval text DEFAULT '1 day',
    p_premake int DEFAULT 4,
    p_time_zone text DEFAULT 'UTC',
    p_key text DEFAULT NULL,
    p_class_column text DEFAULT NULL,
    p_now timestamptz DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    v_cfg record := pgretention._run_settings();
    v_id int;
    v_tid int;
    v_sleep float8;
    v_started timestamptz;
    v_attempt int;
    v_err text;
    v_hint text;
    v_state text;
BEGIN
    -- 1. CHECK constraint NOT VALID (brief lock, retried)
    v_attempt := 0; v_sleep := 0.01; v_started := pg_catalog.clock_timestamp();
    LOOP
        v_attempt := v_attempt + 1;
        v_id := pgretention._adopt_prepare(p_table, p_time_column, p_drop_after, p_interval, p_premake, p_time_zone,
                                           p_key, p_class_column, p_now);
        COMMIT;
        EXIT WHEN v_id IS NOT NULL;
        IF v_attempt >= v_cfg.retries OR extract(epoch FROM pg_catalog.clock_timestamp() - v_started) >= v_cfg.max_wait THEN
            RAISE EXCEPTION 'table % stayed busy: its lock was not granted in % attempts; nothing changed', p_table, v_attempt
                USING ERRCODE = 'lock_not_available';
        END IF;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := least(v_sleep * 2, v_cfg.backoff_max);
    END LOOP;
    -- 2. validate while the application writes
    BEGIN
        PERFORM pgretention._adopt_validate(v_id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT, v_state = RETURNED_SQLSTATE;
    END;
    COMMIT;
    IF v_err IS NOT NULL THEN
        PERFORM pgretention._adopt_abandon(v_id, v_err);
        COMMIT;
        RAISE EXCEPTION '%; nothing changed', v_err USING ERRCODE = v_state, HINT = coalesce(v_hint, '');
    END IF;
    -- 3. swap (short transaction, retried)
    v_attempt := 0; v_sleep := 0.01; v_started := pg_catalog.clock_timestamp();
    LOOP
        v_attempt := v_attempt + 1;
        BEGIN
            v_tid := pgretention._adopt_swap(v_id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT, v_state = RETURNED_SQLSTATE;
        END;
        COMMIT;
        EXIT WHEN v_tid IS NOT NULL OR v_err IS NOT NULL;
        IF v_attempt >= v_cfg.retries OR extract(epoch FROM pg_catalog.clock_timestamp() - v_started) >= v_cfg.max_wait THEN
            v_err := format('table %s stayed busy: its lock was not granted in %s attempts', p_table, v_attempt);
            v_state := '55P03';
            EXIT;
        END IF;
        PERFORM pg_catalog.pg_sleep(v_sleep);
        v_sleep := least(v_sleep * 2, v_cfg.backoff_max);
    END LOOP;
    IF v_err IS NOT NULL THEN
        PERFORM pgretention._adopt_abandon(v_id, v_err);
        COMMIT;
        RAISE EXCEPTION '%; nothing changed', v_err USING ERRCODE = v_state, HINT = coalesce(v_hint, '');
    END IF;
    RAISE NOTICE 'pgretention: % adopted (managed table %, historical partition until the cut-over)', p_table, v_tid;
END
$$;

-- One batch of the historical partition's expired rows, deleted; called by every run after the
-- engine's own work for the table. Returns rows deleted (0 when the table has no historical
-- partition). Rows are read in block ranges from where the previous batch stopped, so a run reads
-- the partition once however many batches it takes.
CREATE OR REPLACE FUNCTION pgretention._adopt_purge_batch(
    p_table_id int, p_class text, p_now timestamptz, p_batch int)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    d pgretention.adoption;
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_hist regclass;
    v_cutoff timestamptz;
    v_blocks bigint;
    v_from bigint;
    v_step bigint := 1024;
    v_n bigint;
    v_total bigint := 0;
    v_hold text;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE table_id = p_table_id AND state = 'adopted' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    SELECT * INTO c FROM pgretention.retention_class WHERE table_id = p_table_id AND class_name = p_class;
    v_hist := to_regclass(format('%I.%I', d.table_schema, d.historical_name));
    IF v_hist IS NULL OR NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = v_hist AND NOT inhdetachpending) THEN
        -- dropped by the engine (its rows all expired): the adoption is complete
        UPDATE pgretention.adoption SET state = 'done', finished_at = now() WHERE id = d.id;
        RETURN 0;
    END IF;
    v_cutoff := p_now - c.drop_after;
    IF d.cutover_at <= v_cutoff THEN
        RETURN 0;  -- all of it expired: the engine drops the whole partition instead
    END IF;
    v_hold := CASE WHEN to_regprocedure('pgretention._hold_predicate(name, name, timestamptz, boolean)') IS NOT NULL
                   THEN pgretention._hold_predicate(t.table_schema, t.table_name, p_now) ELSE 'false' END;
    v_blocks := pg_relation_size(v_hist) / current_setting('block_size')::int;
    v_from := least(d.scan_block, v_blocks);
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        WHILE v_from < v_blocks AND v_total < p_batch LOOP
            EXECUTE format('DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT t.ctid FROM %s t WHERE t.ctid >= %L::tid'
                           ' AND t.ctid < %L::tid AND t.%I < %s AND NOT (%s) LIMIT %s))',
                           v_hist, v_hist, format('(%s,0)', v_from), format('(%s,0)', v_from + v_step), t.time_column,
                           pgretention._typed_literal(v_cutoff, t.time_type, t.time_zone), v_hold, p_batch - v_total);
            GET DIAGNOSTICS v_n = ROW_COUNT;
            v_total := v_total + v_n;
            IF v_total < p_batch THEN
                v_from := v_from + v_step;  -- this block range has no expired row left
            END IF;
        END LOOP;
    EXCEPTION WHEN lock_not_available THEN
        RAISE NOTICE 'pgretention: % busy; expired rows left for the next run', v_hist;
        RETURN 0;
    END;
    UPDATE pgretention.adoption SET scan_block = CASE WHEN v_from >= v_blocks THEN 0 ELSE v_from END,
        rows_purged = rows_purged + v_total
    WHERE id = d.id;
    IF v_total > 0 THEN
        PERFORM pgretention._audit('adopt.purge', format('%I.%I', t.table_schema, t.table_name),
            jsonb_build_object('class', p_class, 'partition', d.historical_name, 'rows', v_total));
    END IF;
    RETURN v_total;
END
$$;

-- Give back a plain table under the same name with every row (for a DBA who changes their mind).
-- One transaction holding ACCESS EXCLUSIVE on the table while the rows written since the cut-over
-- are copied into the historical table (the bulk of older rows does not move).
CREATE OR REPLACE FUNCTION pgretention.unadopt(p_table text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed(p_table);
    d pgretention.adoption;
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
    v_rel regclass;
    v_hist regclass;
    v_tmp name := left(t.table_name, 52) || '_unadopted';
    v_plain text;
    v_cols text;
    v_triggers text[];
    v_views jsonb;
    v_pubs name[];
    v_stmt text;
    v_moved bigint;
    v_total bigint;
    r record;
BEGIN
    SELECT * INTO d FROM pgretention.adoption WHERE table_id = t.id AND state IN ('adopted', 'done') FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % was not adopted: unadopt restores adopted tables only', v_qual
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'release_table stops managing other tables';
    END IF;
    PERFORM pgretention._set_lock_timeout();
    BEGIN
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_qual);
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'table % is busy: its lock was not granted within lock_timeout; nothing changed, retry', v_qual
            USING ERRCODE = 'lock_not_available';
    END;
    PERFORM set_config('lock_timeout', '0', true);
    v_rel := v_qual::regclass;
    v_hist := to_regclass(format('%I.%I', t.table_schema, d.historical_name));
    v_triggers := ARRAY(SELECT pg_get_triggerdef(g.oid) FROM pg_trigger g WHERE g.tgrelid = v_rel AND NOT g.tgisinternal
                        AND g.tgparentid = 0 ORDER BY g.tgname);
    SELECT coalesce(jsonb_agg(jsonb_build_object('view', v.oid::regclass::text, 'def', pg_get_viewdef(v.oid))), '[]')
    INTO v_views
    FROM (SELECT DISTINCT v2.oid FROM pg_depend dp JOIN pg_rewrite rw ON rw.oid = dp.objid JOIN pg_class v2 ON v2.oid = rw.ev_class
          WHERE dp.classid = 'pg_rewrite'::regclass AND dp.refobjid = v_rel AND v2.oid <> v_rel AND v2.relkind = 'v') v;
    v_pubs := ARRAY(SELECT p.pubname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                    WHERE pr.prrelid = v_rel ORDER BY p.pubname);
    IF v_hist IS NOT NULL AND EXISTS (SELECT FROM pg_inherits WHERE inhrelid = v_hist AND inhparent = v_rel) THEN
        EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', v_qual, v_hist);
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', v_hist, d.constraint_name);
    ELSE
        -- the historical partition is gone: a new plain table like the partitioned one
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING ALL)', t.table_schema, d.historical_name, v_qual);
        v_hist := format('%I.%I', t.table_schema, d.historical_name)::regclass;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', v_hist, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = v_rel));
        FOR r IN SELECT a.privilege_type, a.grantee, a.is_grantable FROM pg_class k, aclexplode(k.relacl) a
                 WHERE k.oid = v_rel AND a.grantee <> k.relowner LOOP
            EXECUTE format('GRANT %s ON %s TO %s%s', r.privilege_type, v_hist,
                           CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,
                           CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        FOR r IN SELECT c.conname, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c
                 WHERE c.conrelid = v_rel AND c.contype = 'f' LOOP
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_hist, r.conname, r.def);
        END LOOP;
        IF obj_description(v_rel, 'pg_class') IS NOT NULL THEN
            EXECUTE format('COMMENT ON TABLE %s IS %L', v_hist, obj_description(v_rel, 'pg_class'));
        END IF;
    END IF;
    -- rows written since the cut-over (and any other partition) into the plain table
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols FROM pg_attribute a
    WHERE a.attrelid = v_rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s', v_hist, v_cols, v_cols, v_qual);
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    -- sequences and identity back to the plain table
    FOR r IN SELECT s.oid::regclass AS seq, a.attname FROM pg_depend dp
             JOIN pg_class s ON s.oid = dp.objid AND s.relkind = 'S'
             JOIN pg_attribute a ON a.attrelid = dp.refobjid AND a.attnum = dp.refobjsubid
             WHERE dp.classid = 'pg_class'::regclass AND dp.refobjid = v_rel AND dp.deptype = 'a' LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', r.seq, v_hist, r.attname);
    END LOOP;
    FOR r IN SELECT a.attname FROM pg_attribute a WHERE a.attrelid = v_rel AND a.attidentity <> '' LOOP
        EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s', pg_get_serial_sequence(v_hist::text, r.attname),
                       pg_get_serial_sequence(v_qual, r.attname)::regclass);
    END LOOP;
    -- names back, then everything that pointed at the name
    PERFORM pgretention._forget_partman(ARRAY(SELECT format('%s.%s', parent_schema, parent_name)
                                              FROM pgretention.retention_class WHERE table_id = t.id));
    EXECUTE format('ALTER TABLE %s RENAME TO %I', v_qual, v_tmp);
    EXECUTE format('ALTER TABLE %s RENAME TO %I', v_hist, t.table_name);
    v_plain := v_qual;
    FOR r IN SELECT * FROM jsonb_array_elements(v_views) LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', r.value ->> 'view', r.value ->> 'def');
    END LOOP;
    FOREACH v_stmt IN ARRAY v_triggers LOOP
        EXECUTE v_stmt;  -- server-generated CREATE TRIGGER ... ON <schema>.<table>: now the plain table
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(v_pubs, 1), 0) LOOP
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', v_pubs[i], v_plain);
    END LOOP;
    EXECUTE format('DROP TABLE %I.%I', t.table_schema, v_tmp);
    EXECUTE format('SELECT count(*) FROM %s', v_plain) INTO v_total;
    DELETE FROM pgretention.managed_table WHERE id = t.id;
    UPDATE pgretention.adoption SET state = 'unadopted', finished_at = now() WHERE id = d.id;
    PERFORM pgretention._audit('table.unadopt', v_qual,
        jsonb_build_object('adoption', d.id, 'rows_moved', v_moved, 'rows', v_total));
    RETURN v_total;
END
$$;
