-- Bounded lock waits and batched deletes, shared by every engine.
--
-- The "lock not granted" convention: a step that takes a lock on a live table sets the engine's
-- lock_timeout (_set_lock_timeout), catches lock_not_available and returns NULL: "not now, retry
-- later". Anything else it returns is its result (rows deleted, an operation id, true). The
-- callers (run, anon_run, entity_run, adopt) retry a NULL with a bounded backoff (_job_settings:
-- lock_retries, retry_backoff_max, max_lock_wait_total) and leave the work for the next run when
-- the lock stays busy. Nothing is half done: the step's transaction is rolled back to where it
-- asked for the lock.

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
        rows := pgretention._as_owner(p_rel, format('DELETE FROM %s t WHERE %s', p_rel, p_cond));
        done := true;
    ELSE
        rows := pgretention._as_owner(p_rel, format(
            'DELETE FROM %s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %s t WHERE %s LIMIT %s))',
            p_rel, p_rel, p_cond, p_batch));
        done := rows < p_batch;
    END IF;
END
$$;
