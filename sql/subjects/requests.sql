-- Data-subject requests as records: received, due one month later (extendable by at most two
-- more months, with a reason), fulfilled with a result that carries counts, never personal data.
-- Identifiers are kept in clear only while the request is open; afterwards only keyed hashes remain.
-- Proof of fulfilment is kept 5 years (purged by pgretention._purge_request_proofs at each run).

CREATE OR REPLACE FUNCTION pgretention.request_create(
    p_kind text, p_identifiers jsonb, p_tenant text DEFAULT NULL, p_received timestamptz DEFAULT NULL,
    p_external_ref text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_ids jsonb;
    v_received timestamptz := coalesce(p_received, now());
    v_id bigint;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('access', 'erasure', 'restriction', 'lift_restriction') THEN
        RAISE EXCEPTION 'unknown request kind %: expected access, erasure, restriction or lift_restriction',
            coalesce(quote_literal(p_kind), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_ids := pgretention._normalize_identifiers(p_identifiers);
    IF p_tenant IS NOT NULL AND NOT EXISTS (SELECT FROM pgretention.tenant WHERE name = p_tenant) THEN
        RAISE EXCEPTION 'unknown tenant %', quote_literal(p_tenant) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_received > now() + interval '1 day' THEN
        RAISE EXCEPTION 'request received in the future (%)', v_received USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgretention.subject_request (kind, identifiers, identifier_hashes, tenant, external_ref, received_at, due_at)
    VALUES (p_kind, v_ids, pgretention._identifier_hashes(v_ids), p_tenant, p_external_ref, v_received,
            v_received + interval '1 month')
    RETURNING id INTO v_id;
    PERFORM pgretention._audit('request.create', NULL, jsonb_build_object('request', v_id, 'kind', p_kind,
        'tenant', p_tenant, 'identifier_hashes', pgretention._identifier_hashes(v_ids)));
    RETURN v_id;
END
$$;

-- Extend the deadline (GDPR art. 12(3): by at most two further months, with a reason).
CREATE OR REPLACE FUNCTION pgretention.request_extend(p_request bigint, p_until timestamptz, p_reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    r pgretention.subject_request;
BEGIN
    r := pgretention._request(p_request, true);
    IF r.status <> 'open' THEN
        RAISE EXCEPTION 'request % is %; only open requests can be extended', p_request, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'an extension of request % needs a reason', p_request USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_until IS NULL OR p_until <= r.due_at THEN
        RAISE EXCEPTION 'extension of request % must end after its due date %', p_request, r.due_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_until > r.due_at + interval '2 months' THEN
        RAISE EXCEPTION 'extension of request % to % is beyond two months after its due date % (latest %)',
            p_request, p_until, r.due_at, r.due_at + interval '2 months' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE pgretention.subject_request SET extended_due_at = p_until, extension_reason = p_reason WHERE id = p_request;
    PERFORM pgretention._audit('request.extend', NULL, jsonb_build_object('request', p_request, 'until', p_until,
        'reason', p_reason));
END
$$;

-- The export document of a request: every row about the subject, per table (p_rows false: the
-- document without the rows, for a client that streams them from subject_rows(request)). Reading
-- the rows is audited (request.export).
CREATE OR REPLACE FUNCTION pgretention.request_export(p_request bigint, p_rows boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.subject_request;
    v_tables jsonb := '{}';
    v_n bigint := 0;
BEGIN
    r := pgretention._request(p_request);
    IF r.identifiers IS NULL THEN
        RAISE EXCEPTION 'request % is % and no longer holds its identifiers', p_request, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF coalesce(p_rows, true) THEN
        SELECT coalesce(jsonb_object_agg(x.table_name, x.rows), '{}'), coalesce(sum(x.n), 0) INTO v_tables, v_n
        FROM (SELECT s.table_name, jsonb_agg(s.row_data) AS rows, count(*) AS n
              FROM pgretention.subject_rows(r.identifiers, r.tenant) s GROUP BY s.table_name) x;
        PERFORM pgretention._audit('request.export', NULL, jsonb_build_object('request', r.id, 'kind', r.kind,
            'rows_read', v_n, 'tables', (SELECT count(*) FROM jsonb_object_keys(v_tables)),
            'identifier_hashes', r.identifier_hashes));
    END IF;
    RETURN jsonb_build_object('request', r.id, 'kind', r.kind, 'received_at', r.received_at,
        'generated_at', now(), 'tenant', r.tenant, 'identifiers', r.identifiers)
        || CASE WHEN coalesce(p_rows, true) THEN jsonb_build_object('tables', v_tables) ELSE '{}' END;
END
$$;

-- Carry out a request. access: counts what the export holds (the CLI writes the export first);
-- erasure: deletes or anonymises everything not under hold; restriction / lift_restriction.
-- p_now: NULL (the clock) outside a simulation (_check_reference_time). Returns the result
-- recorded as proof (counts and reasons, no personal data).
CREATE OR REPLACE FUNCTION pgretention.request_fulfil(p_request bigint, p_now timestamptz DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    r pgretention.subject_request;
    v_now timestamptz := coalesce(p_now, now());
    v_result jsonb;
    v_status text := 'fulfilled';
    v_held bigint;
    v_kind text;
    v_value text;
BEGIN
    -- the clock, unless the installing role simulates: a time ahead would erase through holds that
    -- end before it, a time back would date the fulfilment before the deadline
    PERFORM pgretention._check_reference_time(p_now);
    r := pgretention._request(p_request, true);
    IF r.status <> 'open' THEN
        RAISE EXCEPTION 'request % is already %', p_request, r.status USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    CASE r.kind
    WHEN 'access' THEN
        SELECT jsonb_build_object('rows', coalesce(jsonb_object_agg(x.table_name, x.n), '{}')) INTO v_result
        FROM (SELECT s.table_name, count(*) AS n FROM pgretention.subject_rows(r.identifiers, r.tenant) s
              GROUP BY s.table_name) x;
    WHEN 'erasure' THEN
        v_result := jsonb_build_object('tables', pgretention._erase_subject(r.identifiers, r.tenant, v_now));
        SELECT coalesce(sum((value ->> 'held')::bigint), 0) INTO v_held FROM jsonb_each(v_result -> 'tables');
        SELECT v_held + count(*) INTO v_held FROM pgretention.subject_rows(r.identifiers, r.tenant) s
        WHERE s.table_name LIKE 'held:%';
        IF v_held > 0 THEN
            v_status := 'partially_fulfilled';
            v_result := v_result || jsonb_build_object('held_rows', v_held, 'reason',
                'rows under legal hold are kept: ' || (SELECT string_agg(DISTINCT h.reference, ', ')
                    FROM pgretention._active_holds(v_now) h
                    WHERE h.subject_kind IS NULL OR r.identifiers -> h.subject_kind ? h.subject_value));
        END IF;
    WHEN 'restriction' THEN
        FOR v_kind, v_value IN SELECT k.key, v FROM jsonb_each(r.identifiers) k CROSS JOIN LATERAL jsonb_array_elements_text(k.value) v LOOP
            INSERT INTO pgretention.restriction (kind, value, tenant, request_id) VALUES (v_kind, v_value, r.tenant, r.id)
            ON CONFLICT (kind, value) DO NOTHING;
        END LOOP;
        v_result := jsonb_build_object('restricted_identifiers', (SELECT count(*) FROM pgretention.restriction WHERE request_id = r.id));
    WHEN 'lift_restriction' THEN
        DELETE FROM pgretention.restriction x USING jsonb_each(r.identifiers) k
        WHERE x.kind = k.key AND x.value IN (SELECT jsonb_array_elements_text(k.value));
        GET DIAGNOSTICS v_held = ROW_COUNT;
        v_result := jsonb_build_object('lifted_identifiers', v_held);
    END CASE;
    UPDATE pgretention.subject_request
    SET status = v_status, fulfilled_at = v_now, result = v_result, identifiers = NULL
    WHERE id = p_request;
    PERFORM pgretention._audit('request.' || r.kind, NULL, jsonb_build_object('request', r.id, 'status', v_status,
        'identifier_hashes', r.identifier_hashes, 'tenant', r.tenant) || v_result);
    RETURN v_result || jsonb_build_object('status', v_status);
END
$$;

CREATE OR REPLACE FUNCTION pgretention.request_reject(p_request bigint, p_reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pgretention.subject_request;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'rejecting request % needs a reason', p_request USING ERRCODE = 'invalid_parameter_value';
    END IF;
    r := pgretention._request(p_request, true);
    IF r.status <> 'open' THEN
        RAISE EXCEPTION 'request % is %; only open requests can be rejected', p_request, r.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE pgretention.subject_request SET status = 'rejected', fulfilled_at = now(), identifiers = NULL,
        result = jsonb_build_object('reason', p_reason)
    WHERE id = p_request;
    PERFORM pgretention._audit('request.reject', NULL, jsonb_build_object('request', p_request, 'reason', p_reason));
END
$$;

CREATE OR REPLACE VIEW pgretention.overdue_requests AS
    SELECT r.id, r.kind, r.tenant, r.external_ref, r.received_at, r.due_at, r.extended_due_at,
           coalesce(r.extended_due_at, r.due_at) AS deadline, now() - coalesce(r.extended_due_at, r.due_at) AS overdue_by
    FROM pgretention.subject_request r
    WHERE r.status = 'open' AND coalesce(r.extended_due_at, r.due_at) < now();

-- Same, at a reference time (simulations, reports).
CREATE OR REPLACE FUNCTION pgretention.request_overdue(p_now timestamptz)
RETURNS TABLE (id bigint, kind text, tenant text, received_at timestamptz, deadline timestamptz, overdue_by interval)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.id, r.kind, r.tenant, r.received_at, coalesce(r.extended_due_at, r.due_at),
           p_now - coalesce(r.extended_due_at, r.due_at)
    FROM pgretention.subject_request r
    WHERE r.status = 'open' AND coalesce(r.extended_due_at, r.due_at) < p_now
    ORDER BY 5
$$;

-- Proof of fulfilment is kept 5 years, then removed (at p_now: the run's reference time, run.sql's
-- _run_step; granted to no one). Returns requests removed.
CREATE OR REPLACE FUNCTION pgretention._purge_request_proofs(p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_now IS NULL OR NOT isfinite(p_now) THEN
        RAISE EXCEPTION 'proofs are purged at a point in time, not %', coalesce(p_now::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM pgretention.subject_request WHERE status <> 'open' AND fulfilled_at < p_now - interval '5 years';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        PERFORM pgretention._audit('request.proof_purge', NULL, jsonb_build_object('requests', v_n));
    END IF;
    RETURN v_n;
END
$$;

-- The report's check of requests: every overdue request is a violation (ids only, no personal data).
CREATE OR REPLACE FUNCTION pgretention.report_check_subject_requests(p_now timestamptz)
RETURNS TABLE (section text, severity text, object text, check_name text, message text, value bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT 'subject_requests'::text, 'violation'::text, r.kind || ' requests', 'overdue'::text,
           format('%s %s requests are overdue (ids %s)', r.overdue, r.kind, array_to_string(r.overdue_ids, ', ')),
           r.overdue
    FROM pgretention.report_subject_requests(p_now) r WHERE r.overdue > 0;
END
$$;
