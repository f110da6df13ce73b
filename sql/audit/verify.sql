-- Reading the audit log: verify the chain, list records, and the log's own retention (a checkpoint
-- record keeps what remains verifiable). The report's check of the chain.

-- Walk the chain; returns the first record whose content, link or position does not match (none:
-- intact). first_broken_id names the record that was changed, is missing, or is out of place.
CREATE OR REPLACE FUNCTION pgretention.audit_verify()
RETURNS TABLE (ok boolean, records bigint, first_broken_id bigint, reason text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n bigint;
    v_first pgretention.audit_log;
    v_bad record;
    v_head pgretention.audit_head;
    v_last pgretention.audit_log;
    v_other bigint;
BEGIN
    SELECT count(*) INTO v_n FROM pgretention.audit_log;
    SELECT * INTO v_head FROM pgretention.audit_head WHERE singleton;
    IF v_n = 0 THEN
        IF v_head.last_id IS NOT NULL THEN
            RETURN QUERY SELECT false, v_n, v_head.last_id,
                format('records up to %s are missing: the audit log is empty', v_head.last_id);
            RETURN;
        END IF;
        RETURN QUERY SELECT true, v_n, NULL::bigint, NULL::text;
        RETURN;
    END IF;

    -- the start of the chain: the first record ever, or the first kept by a checkpoint
    SELECT * INTO v_first FROM pgretention.audit_log ORDER BY id LIMIT 1;
    IF v_first.prev_hash IS NOT NULL AND NOT EXISTS (
        SELECT FROM pgretention.audit_log c
        WHERE c.action = 'audit.checkpoint' AND (c.details ->> 'first_kept_id')::bigint = v_first.id
          AND c.details ->> 'cut_hash' = encode(v_first.prev_hash, 'hex')) THEN
        RETURN QUERY SELECT false, v_n, v_first.id - 1,
            format('records before %s are missing and no checkpoint record covers the cut', v_first.id);
        RETURN;
    END IF;

    -- every checkpoint: it cut only records older than the audit log is kept (at least a year
    -- before its own time); a checkpoint that claims a later cutoff removed records early
    SELECT c.id, c.at, c.details INTO v_bad FROM pgretention.audit_log c
    WHERE c.action = 'audit.checkpoint'
      AND (c.details ->> 'cutoff' IS NULL OR c.details ->> 'keep' IS NULL
           OR (c.details ->> 'cutoff')::timestamptz > c.at - greatest(interval '1 year', (c.details ->> 'keep')::interval)
           OR (c.details ->> 'removed_to')::timestamptz >= (c.details ->> 'cutoff')::timestamptz)
    ORDER BY c.id LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT false, v_n, v_bad.id,
            format('checkpoint record %s removed records younger than the audit log is kept (cutoff %s, written %s)',
                   v_bad.id, coalesce(v_bad.details ->> 'cutoff', 'missing'), v_bad.at);
        RETURN;
    END IF;

    -- every record: its hash covers its content and its stored link; its link is the previous hash
    SELECT x.* INTO v_bad FROM (
        SELECT a.id, a.prev_hash, a.hash,
               lag(a.id) OVER w AS prev_id, lag(a.hash) OVER w AS prev_rec_hash,
               row_number() OVER w AS n,
               sha256(coalesce(a.prev_hash, '\x'::bytea)
                      || convert_to(pgretention._audit_record_text(a), 'UTF8')) AS computed
        FROM pgretention.audit_log a
        WINDOW w AS (ORDER BY a.id)) x
    WHERE x.hash <> x.computed
       OR (x.n > 1 AND x.prev_hash IS DISTINCT FROM x.prev_rec_hash)
    ORDER BY x.id LIMIT 1;
    IF FOUND THEN
        IF v_bad.n > 1 AND v_bad.prev_hash IS DISTINCT FROM v_bad.prev_rec_hash THEN
            IF v_bad.id > v_bad.prev_id + 1 THEN
                RETURN QUERY SELECT false, v_n, v_bad.prev_id + 1,
                    CASE WHEN v_bad.id = v_bad.prev_id + 2 THEN format('record %s is missing', v_bad.prev_id + 1)
                         ELSE format('records %s to %s are missing', v_bad.prev_id + 1, v_bad.id - 1) END;
                RETURN;
            END IF;
            SELECT a.id INTO v_other FROM pgretention.audit_log a WHERE a.hash = v_bad.prev_hash LIMIT 1;
            IF v_other IS NOT NULL AND v_other <> v_bad.prev_id THEN
                RETURN QUERY SELECT false, v_n, v_bad.id,
                    format('record %s is out of order: it links to record %s, not to record %s',
                           v_bad.id, v_other, v_bad.prev_id);
                RETURN;
            END IF;
            IF v_bad.hash <> v_bad.computed THEN
                RETURN QUERY SELECT false, v_n, v_bad.id, 'content does not match its hash'::text;
                RETURN;
            END IF;
            -- record id is consistent in itself but links to another hash: its predecessor was
            -- rewritten and re-hashed
            RETURN QUERY SELECT false, v_n, v_bad.prev_id,
                format('record %s was altered and re-hashed: record %s links to a different hash',
                       v_bad.prev_id, v_bad.id);
            RETURN;
        END IF;
        RETURN QUERY SELECT false, v_n, v_bad.id, 'content does not match its hash'::text;
        RETURN;
    END IF;

    -- the end of the chain: nothing removed after the last record
    SELECT * INTO v_last FROM pgretention.audit_log ORDER BY id DESC LIMIT 1;
    IF v_head.last_id IS NOT NULL AND (v_head.last_id <> v_last.id OR v_head.last_hash <> v_last.hash) THEN
        IF v_head.last_id > v_last.id THEN
            RETURN QUERY SELECT false, v_n, v_last.id + 1,
                CASE WHEN v_head.last_id = v_last.id + 1 THEN format('record %s (the last) is missing', v_last.id + 1)
                     ELSE format('records %s to %s (the last) are missing', v_last.id + 1, v_head.last_id) END;
        ELSE
            RETURN QUERY SELECT false, v_n, v_last.id,
                format('record %s does not match the chain head (record %s)', v_last.id, v_head.last_id);
        END IF;
        RETURN;
    END IF;
    RETURN QUERY SELECT true, v_n, NULL::bigint, NULL::text;
END
$$;

-- Audit records for display (no filtering by personal data: records carry none).
CREATE OR REPLACE FUNCTION pgretention.audit_records(
    p_since timestamptz DEFAULT NULL, p_action text DEFAULT NULL, p_object text DEFAULT NULL,
    p_limit int DEFAULT 100)
RETURNS SETOF pgretention.audit_log
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
        RAISE EXCEPTION 'invalid limit %: expected 1 to 100000 records', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT * FROM (
        SELECT a.* FROM pgretention.audit_log a
        WHERE (p_since IS NULL OR a.at >= p_since)
          AND (p_action IS NULL OR a.action = p_action OR a.action LIKE p_action || '.%')
          AND (p_object IS NULL OR a.object = p_object)
        ORDER BY a.id DESC LIMIT p_limit) x
    ORDER BY x.id;
END
$$;

-- The audit log's own retention (setting audit_keep, default 5 years, never less than 1 year):
-- appends one checkpoint record carrying the hash at the cut (the hash of the last removed
-- record, which the first kept record links to), then removes the records before the cut.
-- Measured against the clock, always: p_now may only be NULL or the clock (a simulated reference
-- time is refused here; audit_verify flags a checkpoint that cut records younger than audit_keep,
-- and the append-only trigger refuses to delete them). Returns the number of records removed.
CREATE OR REPLACE FUNCTION pgretention.audit_retention(p_now timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_now timestamptz := coalesce(p_now, now());
    v_keep interval;
    v_cutoff timestamptz;
    v_first bigint;
    v_cut_hash bytea;
    v_removed bigint;
    v_from timestamptz;
    v_to timestamptz;
    v_checkpoint bigint;
    v_deleted bigint;
BEGIN
    IF p_now IS NOT NULL AND p_now NOT BETWEEN now() - interval '1 minute' AND now() + interval '1 minute' THEN
        RAISE EXCEPTION 'the audit log''s retention is measured against the clock, not %', p_now
            USING ERRCODE = 'invalid_parameter_value', HINT = 'call pgretention.audit_retention() without a time';
    END IF;
    v_now := now();
    v_keep := pgretention._parse_interval('setting audit_keep', pgretention._setting_value('audit_keep'));
    IF v_keep < interval '1 year' THEN
        RAISE EXCEPTION 'setting audit_keep is %: the audit log is kept at least 1 year', v_keep
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_cutoff := v_now - v_keep;
    PERFORM pg_advisory_xact_lock(hashtext('pgretention.audit_log'));
    SELECT min(a.id) INTO v_first FROM pgretention.audit_log a WHERE a.at >= v_cutoff;
    IF v_first IS NULL THEN  -- everything is older: the checkpoint record itself is the first kept
        v_first := coalesce((SELECT h.last_id FROM pgretention.audit_head h WHERE h.singleton),
                            (SELECT max(a.id) FROM pgretention.audit_log a), 0) + 1;
    END IF;
    SELECT count(*), min(a.at), max(a.at) INTO v_removed, v_from, v_to
    FROM pgretention.audit_log a WHERE a.id < v_first;
    IF v_removed = 0 THEN
        RETURN 0;
    END IF;
    SELECT a.hash INTO v_cut_hash FROM pgretention.audit_log a WHERE a.id < v_first ORDER BY a.id DESC LIMIT 1;
    v_checkpoint := pgretention._audit('audit.checkpoint', 'pgretention.audit_log', jsonb_build_object(
        'first_kept_id', v_first, 'cut_hash', encode(v_cut_hash, 'hex'), 'records_removed', v_removed,
        'removed_from', v_from, 'removed_to', v_to, 'keep', v_keep::text, 'cutoff', v_cutoff));
    -- the append-only trigger lets exactly these go: before the checkpoint just written (the chain's
    -- head, in this transaction) and older than its cutoff
    DELETE FROM pgretention.audit_log a WHERE a.id < v_first;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.report_check_audit(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v record;
BEGIN
    SELECT * INTO v FROM pgretention.audit_verify();
    IF NOT v.ok THEN
        RETURN QUERY SELECT 'audit'::text, 'violation'::text, 'pgretention.audit_log'::text, 'chain'::text,
            format('audit chain broken at record %s: %s', v.first_broken_id, v.reason), v.first_broken_id;
    END IF;
END
$$;
