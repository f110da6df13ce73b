-- Hash chain of the audit log. Each record's hash covers its content and the previous record's
-- hash; ids are assigned under a transaction-level advisory lock so id order is chain order.
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
    v_prev bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgretention.audit_log'));
    NEW.id := nextval('pgretention.audit_log_id_seq');
    NEW.at := clock_timestamp();
    SELECT a.hash INTO v_prev FROM pgretention.audit_log a ORDER BY a.id DESC LIMIT 1;
    NEW.prev_hash := v_prev;
    NEW.hash := sha256(coalesce(v_prev, '\x'::bytea)
                       || convert_to(pgretention._audit_record_text(NEW), 'UTF8'));
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
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

-- Walk the chain; returns the first record whose hash or link does not match (none: intact).
CREATE OR REPLACE FUNCTION pgretention.verify_audit()
RETURNS TABLE (ok boolean, records bigint, first_broken_id bigint, reason text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.audit_log;
    v_prev bytea;
    v_prev_id bigint;
    v_n bigint := 0;
BEGIN
    FOR r IN SELECT * FROM pgretention.audit_log ORDER BY id LOOP
        v_n := v_n + 1;
        IF v_prev_id IS NOT NULL AND r.id <> v_prev_id + 1 THEN
            RETURN QUERY SELECT false, v_n, r.id, format('gap: record %s follows %s', r.id, v_prev_id);
            RETURN;
        END IF;
        IF r.prev_hash IS DISTINCT FROM v_prev THEN
            RETURN QUERY SELECT false, v_n, r.id, 'link to previous record broken'::text;
            RETURN;
        END IF;
        IF r.hash <> sha256(coalesce(v_prev, '\x'::bytea)
                            || convert_to(pgretention._audit_record_text(r), 'UTF8')) THEN
            RETURN QUERY SELECT false, v_n, r.id, 'content does not match its hash'::text;
            RETURN;
        END IF;
        v_prev := r.hash;
        v_prev_id := r.id;
    END LOOP;
    RETURN QUERY SELECT true, v_n, NULL::bigint, NULL::text;
END
$$;
