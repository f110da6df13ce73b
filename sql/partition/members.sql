-- Class members: which values of the class column belong to which class, and the LIST bounds of
-- the class partitions kept in line with them.

-- Assign a class-column value (tenant, region, ...) to a class.
--  * A value with no rows stored yet is routed to the class's partition at once: the LIST bounds
--    change in one transaction with bounded lock waits (see _reroute for its cost).
--  * A value that already has rows keeps them where they are; they follow the new class's period
--    from the next run on (rows past a shorter period are deleted in bounded batches; rows kept
--    longer are moved into the old class's default partition before its time partition is dropped).
CREATE OR REPLACE FUNCTION pgretention.member_assign(
    p_table text, p_value text, p_class text, p_now timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table := pgretention._managed_own(p_table);
    c pgretention.retention_class;
    m pgretention.class_member;
    v_from text;
    v_from_rel text;
    v_has_rows boolean;
    v_result text;
    v_qual text := format('%I.%I', t.table_schema, t.table_name);
BEGIN
    IF t.class_column IS NULL THEN
        RAISE EXCEPTION 'table % has no class column', v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_value IS NULL OR p_value = '' THEN
        RAISE EXCEPTION 'member value for table % must not be empty', v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    c := pgretention._class(t.id, p_class);
    IF t.min_drop_after IS NOT NULL AND c.drop_after < t.min_drop_after
       OR t.max_drop_after IS NOT NULL AND c.drop_after > t.max_drop_after THEN
        RAISE EXCEPTION 'class % (drop_after %) is outside the window % to % allowed for members of table %',
            p_class, c.drop_after, t.min_drop_after, t.max_drop_after, v_qual USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        EXECUTE format('SELECT %L::%s', p_value, pgretention._column_type(v_qual::regclass, t.class_column));
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'member value % does not fit class column % of table %', quote_literal(p_value),
            quote_ident(t.class_column), v_qual USING ERRCODE = 'invalid_text_representation';
    END;
    SELECT * INTO m FROM pgretention.class_member WHERE table_id = t.id AND value = p_value FOR UPDATE;
    v_from := coalesce(m.routed_class, t.default_class);
    IF m.class_name = p_class THEN
        RETURN 'unchanged';
    END IF;
    IF t.layout = 'time' THEN
        -- shared partitions: the value's rows follow the new class at once; partitions already
        -- purged for that class are looked at again
        INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
        VALUES (t.id, p_value, p_class, p_class)
        ON CONFLICT (table_id, value) DO UPDATE SET class_name = excluded.class_name,
            routed_class = excluded.routed_class, since = now();
        UPDATE pgretention.class_purge SET done = false WHERE table_id = t.id AND class_name = p_class;
        v_result := 'assigned to class ' || p_class;
    ELSIF v_from = p_class THEN  -- back to where its rows are
        UPDATE pgretention.class_member SET class_name = p_class, since = now() WHERE table_id = t.id AND value = p_value;
        v_result := 'reassigned';
    ELSE
        SELECT format('%I.%I', parent_schema, parent_name) INTO v_from_rel FROM pgretention.retention_class
        WHERE table_id = t.id AND class_name = v_from;
        EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I = %L)', v_from_rel, t.class_column, p_value) INTO v_has_rows;
        IF v_has_rows THEN
            INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
            VALUES (t.id, p_value, p_class, v_from)
            ON CONFLICT (table_id, value) DO UPDATE SET class_name = excluded.class_name, since = now();
            v_result := 'reassigned; stored rows stay in partition of class ' || v_from;
        ELSE
            INSERT INTO pgretention.class_member (table_id, value, class_name, routed_class)
            VALUES (t.id, p_value, p_class, p_class)
            ON CONFLICT (table_id, value) DO UPDATE SET class_name = excluded.class_name,
                routed_class = excluded.routed_class, since = now();
            PERFORM pgretention._reroute(t.id, ARRAY[v_from, p_class], coalesce(p_now, now()));
            v_result := 'routed to class ' || p_class;
        END IF;
    END IF;
    PERFORM pgretention._audit('member.assign', v_qual,
        jsonb_build_object('value_hash', encode(sha256(convert_to(p_value, 'UTF8')), 'hex'),
                           'from', coalesce(m.class_name, t.default_class), 'to', p_class, 'result', v_result));
    RETURN v_result;
END
$$;

-- Bring the LIST bounds of the given classes' partitions in line with class_member.routed_class,
-- in the caller's transaction, with the engine's lock_timeout (a busy table gives a clear error
-- and nothing changes). PostgreSQL verifies the re-attached partitions and the DEFAULT partition,
-- so a value is re-routed only while it has no stored rows (member_assign checks), and the cost
-- of re-routing grows with the size of those partitions (docs/partition-engine.md).
CREATE OR REPLACE FUNCTION pgretention._reroute(p_table_id int, p_classes text[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    t pgretention.managed_table;
    c pgretention.retention_class;
    v_qual text;
    v_list text[];
    v_lit text;
    v_empty boolean;
BEGIN
    t := pgretention._table(p_table_id);
    v_qual := format('%I.%I', t.table_schema, t.table_name);
    PERFORM pgretention._set_lock_timeout();
    FOR c IN SELECT * FROM pgretention.retention_class
             WHERE table_id = t.id AND class_name = ANY (p_classes) AND class_name <> t.default_class
             ORDER BY class_name LOOP
        v_list := ARRAY(SELECT value FROM pgretention.class_member
                        WHERE table_id = t.id AND routed_class = c.class_name ORDER BY value);
        v_lit := (SELECT string_agg(format('%L', x), ', ') FROM unnest(v_list) x);
        IF cardinality(v_list) = 0 THEN
            -- no member left: the class partition is empty (its last value had no rows); remove it
            IF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_qual, c.parent_schema, c.parent_name);
                EXECUTE format('SELECT NOT EXISTS (SELECT FROM %I.%I)', c.parent_schema, c.parent_name) INTO v_empty;
                IF NOT v_empty THEN
                    RAISE EXCEPTION 'rows arrived in class partition %.% while it was re-routed; retry',
                        c.parent_schema, c.parent_name USING ERRCODE = 'object_not_in_prerequisite_state';
                END IF;
                PERFORM pgretention._forget_partman(ARRAY[format('%s.%s', c.parent_schema, c.parent_name)]);
                EXECUTE format('DROP TABLE %I.%I', c.parent_schema, c.parent_name);
            END IF;
        ELSIF to_regclass(format('%I.%I', c.parent_schema, c.parent_name)) IS NULL THEN
            PERFORM pgretention._create_class_partition(t.id, c.class_name, v_list, date_trunc('day', p_now));
        ELSE
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_qual, c.parent_schema, c.parent_name);
            EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES IN (%s)', v_qual,
                           c.parent_schema, c.parent_name, v_lit);
        END IF;
    END LOOP;
END
$$;
