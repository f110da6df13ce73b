-- The audit log: an append-only, hash-chained record of every destructive or policy action.
--
-- Each record's hash covers its content and the previous record's hash. Ids are assigned as
-- last id + 1 under a transaction-level advisory lock held until commit, so ids have no gaps and
-- id order is chain order: a removed record shows as a missing id, a rewritten one as a hash
-- mismatch, a moved one as a broken link. The chain head (pgretention.audit_head) reveals records
-- removed from the end. Old records leave through audit_retention() only, which first appends a
-- checkpoint record carrying the hash at the cut, so the rest of the chain stays verifiable.
--
-- Who and from where: session_role is the session's login role (set by the chain trigger, not by
-- the writer); application is what the client called itself (application_name), which any client
-- chooses freely: it is stored as "client:<application_name>", never as a bare name that could
-- pass for pgretention's own (a record of a run carries the run's id; job_run says which runner).

CREATE OR REPLACE FUNCTION pgretention._audit_record_text(p pgretention.audit_log)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT concat_ws(E'\x1f',
        p.id::text,
        (extract(epoch FROM p.at) * 1000000)::bigint::text,
        p.session_role::text,
        p.application,
        p.action,
        coalesce(p.object, ''),
        p.details::text,
        p.outcome)
$$;

CREATE OR REPLACE FUNCTION pgretention._audit_chain()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head pgretention.audit_head;
    v_rows bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgretention.audit_log'));
    SELECT * INTO v_head FROM pgretention.audit_head h WHERE h.singleton FOR UPDATE;
    IF NOT FOUND THEN
        -- first record (or a log installed before the head existed)
        SELECT a.id, a.hash INTO v_head.last_id, v_head.last_hash
        FROM pgretention.audit_log a ORDER BY a.id DESC LIMIT 1;
        v_head.records_total := (SELECT count(*) FROM pgretention.audit_log);
    END IF;
    NEW.id := coalesce(v_head.last_id, 0) + 1;
    NEW.at := clock_timestamp();
    NEW.session_role := session_user;
    NEW.application := 'client:' || coalesce(current_setting('application_name', true), '');
    NEW.prev_hash := v_head.last_hash;
    NEW.hash := sha256(coalesce(v_head.last_hash, '\x'::bytea)
                       || convert_to(pgretention._audit_record_text(NEW), 'UTF8'));
    INSERT INTO pgretention.audit_head AS h (singleton, last_id, last_hash, records_total)
    VALUES (true, NEW.id, NEW.hash, coalesce(v_head.records_total, 0) + 1)
    ON CONFLICT (singleton) DO UPDATE
        SET last_id = excluded.last_id, last_hash = excluded.last_hash, records_total = h.records_total + 1;
    v_rows := CASE WHEN jsonb_typeof(NEW.details -> 'rows') = 'number'
                   THEN (NEW.details ->> 'rows')::numeric::bigint ELSE 0 END;
    INSERT INTO pgretention.audit_counter AS c (action, object, records, rows, last_at)
    VALUES (NEW.action, coalesce(NEW.object, ''), 1, v_rows, NEW.at)
    ON CONFLICT (action, object) DO UPDATE
        SET records = c.records + 1, rows = c.rows + excluded.rows, last_at = excluded.last_at;
    RETURN NEW;
END
$$;

-- Is p_xid this transaction or one of its subtransactions? A row this session sees whose writer is
-- still in progress was written by this transaction (the rows of other transactions in progress
-- are invisible to it). p_xid is widened to a full transaction id from this transaction's own.
CREATE OR REPLACE FUNCTION pgretention._xact_is_current(p_xid xid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_top numeric := pg_current_xact_id()::text::numeric;
    v_full numeric;
BEGIN
    IF p_xid IS NULL THEN
        RETURN false;
    END IF;
    v_full := v_top + (mod(p_xid::text::numeric - mod(v_top, 4294967296) + 6442450944, 4294967296) - 2147483648);
    RETURN v_full >= 3 AND pg_xact_status(v_full::text::xid8) = 'in progress';
END
$$;

-- UPDATE and TRUNCATE are refused to everybody (the table owner and superusers included). DELETE
-- only of what audit_retention() removes: records before the first kept id of the checkpoint
-- record that is the chain's head and was written in this same transaction, and only records older
-- than the checkpoint's cutoff, which is at least a year before now by the clock. Nothing here
-- trusts a setting of the session: the schema's owner cannot cut recent history without disabling
-- the trigger (a superuser who disables it and rewrites the whole chain is the documented limit).
CREATE OR REPLACE FUNCTION pgretention._audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_head pgretention.audit_head;
    v_cp record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        SELECT * INTO v_head FROM pgretention.audit_head h WHERE h.singleton;
        SELECT a.xmin AS writer, a.action, a.details INTO v_cp FROM pgretention.audit_log a WHERE a.id = v_head.last_id;
        IF v_cp.action = 'audit.checkpoint'
           AND OLD.id < (v_cp.details ->> 'first_kept_id')::bigint
           AND (v_cp.details ->> 'cutoff')::timestamptz <= now() - interval '1 year'
           AND OLD.at < (v_cp.details ->> 'cutoff')::timestamptz
           AND pgretention._xact_is_current(v_cp.writer) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'pgretention.audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Append one audit record; returns its id.
CREATE OR REPLACE FUNCTION pgretention._audit(
    p_action text, p_object text, p_details jsonb DEFAULT '{}', p_outcome text DEFAULT 'ok')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO pgretention.audit_log (action, object, details, outcome, hash)
    VALUES (p_action, p_object, coalesce(p_details, '{}'), p_outcome, '\x')
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- The chain and the append-only rule, on the audit log itself.
CREATE OR REPLACE TRIGGER audit_log_chain
    BEFORE INSERT ON pgretention.audit_log
    FOR EACH ROW EXECUTE FUNCTION pgretention._audit_chain();

CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON pgretention.audit_log
    FOR EACH ROW EXECUTE FUNCTION pgretention._audit_append_only();

CREATE OR REPLACE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON pgretention.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION pgretention._audit_append_only();
