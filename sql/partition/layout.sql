-- Layouts. A managed table with a class column has one of two layouts:
--   'class' (default): LIST by class, each class RANGE by time; a class's expired data is whole
--           partitions of that class (docs/partition-engine.md).
--   'time': RANGE by time only, every class in the same partitions; a partition is dropped when
--           the table's longest class has expired, and the rows of shorter classes are deleted from
--           it once it is past their period. This is the layout a Citus distributed table can have
--           (Citus refuses multi-level partitioning); docs/citus.md. Citus itself: core/deps.sql.

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
    t := pgretention._table(p_table_id);
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
