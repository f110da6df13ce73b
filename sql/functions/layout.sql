-- Layouts and Citus. A managed table with a class column has one of two layouts:
--   'class' (default): LIST by class, each class RANGE by time; a class's expired data is whole
--           partitions of that class (docs/partition-engine.md).
--   'time': RANGE by time only, every class in the same partitions; a partition is dropped when
--           the table's longest class has expired, and the rows of shorter classes are deleted from
--           it once it is past their period. This is the layout a Citus distributed table can have
--           (Citus refuses multi-level partitioning); docs/citus.md.

-- Citus is installed in this database (pgretention then runs on the coordinator).
CREATE OR REPLACE FUNCTION pgretention._citus()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') $$;

-- A Citus table (distributed or reference): its rows live in shards on other nodes, so row
-- addresses (ctid, tableoid) mean nothing across the cluster and are never used on it.
CREATE OR REPLACE FUNCTION pgretention._is_distributed(p_rel regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v boolean;
BEGIN
    IF p_rel IS NULL OR to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)' INTO v USING p_rel;
    RETURN v;
END
$$;

-- The rows of a class, as a condition on the class column (unqualified). Members are compared as
-- text, as everywhere in the engine; the default class holds NULL and every unlisted value.
CREATE OR REPLACE FUNCTION pgretention._class_cond(p_table_id int, p_class text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t pgretention.managed_table;
BEGIN
    SELECT * INTO t FROM pgretention.managed_table WHERE id = p_table_id;
    IF t.class_column IS NULL THEN
        RETURN 'true';
    ELSIF p_class = t.default_class THEN
        RETURN format('(%I IS NULL OR NOT %I::text = ANY (%L::text[]))', t.class_column, t.class_column,
                      ARRAY(SELECT m.value FROM pgretention.class_member m
                            WHERE m.table_id = p_table_id AND m.class_name <> t.default_class ORDER BY m.value));
    END IF;
    RETURN format('(%I IS NOT NULL AND %I::text = ANY (%L::text[]))', t.class_column, t.class_column,
                  ARRAY(SELECT m.value FROM pgretention.class_member m
                        WHERE m.table_id = p_table_id AND m.class_name = p_class ORDER BY m.value));
END
$$;

-- The rows of a class within its partitions: all of them in the class layout, the class's
-- condition in the time-first layout (partitions shared by every class).
CREATE OR REPLACE FUNCTION pgretention._class_filter(p_table_id int, p_class text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN t.layout = 'time' THEN pgretention._class_cond(p_table_id, p_class) ELSE 'true' END
    FROM pgretention.managed_table t WHERE t.id = p_table_id
$$;

-- The age past which a class's partitions are dropped: its drop_after in the class layout, the
-- longest drop_after of the table in the time-first layout.
CREATE OR REPLACE FUNCTION pgretention._leaf_drop_after(p_table_id int, p_class text)
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN t.layout = 'time' THEN (SELECT max(k.drop_after) FROM pgretention.retention_class k
                                             WHERE k.table_id = p_table_id)
                ELSE (SELECT k.drop_after FROM pgretention.retention_class k
                      WHERE k.table_id = p_table_id AND k.class_name = p_class) END
    FROM pgretention.managed_table t WHERE t.id = p_table_id
$$;

-- In the time-first layout the shared partitions are premade, dropped and anonymised once per
-- table: by the steps of its default class.
CREATE OR REPLACE FUNCTION pgretention._owns_leaves(p_table_id int, p_class text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.layout = 'class' OR t.default_class = p_class FROM pgretention.managed_table t WHERE t.id = p_table_id
$$;

-- The engine's bounded lock wait for the rest of the transaction. On Citus the locks that matter
-- are also taken on the workers: a SET LOCAL statement (not set_config) with
-- citus.propagate_set_commands = 'local' carries the timeout to their connections.
CREATE OR REPLACE FUNCTION pgretention._set_lock_timeout(p_value text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_value text := coalesce(p_value, pgretention._setting_value('lock_timeout'));
BEGIN
    IF pgretention._citus() THEN
        PERFORM set_config('citus.propagate_set_commands', 'local', true);
        EXECUTE format('SET LOCAL lock_timeout = %L', v_value);
    ELSE
        PERFORM set_config('lock_timeout', v_value, true);
    END IF;
END
$$;

-- The distribution column of a Citus distributed table (NULL for any other table).
CREATE OR REPLACE FUNCTION pgretention._distribution_column(p_rel regclass)
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v name;
BEGIN
    IF NOT pgretention._is_distributed(p_rel) THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT column_to_column_name(logicalrelid, partkey) FROM pg_catalog.pg_dist_partition'
            ' WHERE logicalrelid = $1 AND partkey IS NOT NULL' INTO v USING p_rel;
    RETURN v;
END
$$;

-- Delete one batch of the rows of p_rel (aliased t) that match p_cond; the caller has set the lock
-- timeout. On one server: at most p_batch rows, chosen by row address (one short transaction each).
-- On a Citus table: every matching row in one statement, which the shards run in parallel (row
-- addresses are per shard and mean nothing across the cluster). done: nothing matching is left.
CREATE OR REPLACE FUNCTION pgretention._delete_batch(p_rel regclass, p_cond text, p_batch int,
                                                     OUT rows bigint, OUT done boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pgretention._is_distributed(p_rel) THEN
        EXECUTE format('DELETE FROM %s t WHERE %s', p_rel, p_cond);
        GET DIAGNOSTICS rows = ROW_COUNT;
        done := true;
    ELSE
        EXECUTE format('DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s t WHERE %s LIMIT %s))',
                       p_rel, p_rel, p_cond, p_batch);
        GET DIAGNOSTICS rows = ROW_COUNT;
        done := rows < p_batch;
    END IF;
END
$$;
