-- Data subjects (subjects/): which columns of which tables identify a person (tables.sql), how
-- identifiers are normalised and hashed (this file), how a subject's rows are found, exported and
-- erased (rows.sql), requests as records (requests.sql), legal holds (holds.sql) and restriction
-- (restriction.sql).

-- Normalise an identifier of a kind, or raise an error naming it.
--   phone:   E.164 (+ and 7-15 digits); spaces, dashes, dots, brackets removed; 00 prefix -> +
--   email:   trimmed, lower case, one @ and a dot in the domain
--   account: trimmed, non-empty, at most 200 characters
--   ip:      IPv4 or IPv6 host address
CREATE OR REPLACE FUNCTION pgretention._normalize_identifier(p_kind text, p_value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
BEGIN
    IF p_value IS NULL OR btrim(p_value) = '' THEN
        RAISE EXCEPTION 'empty % identifier', coalesce(p_kind, '') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE p_kind
    WHEN 'phone' THEN
        v := regexp_replace(btrim(p_value), '[[:space:]().\-/]', '', 'g');
        IF left(v, 2) = '00' THEN
            v := '+' || substr(v, 3);
        END IF;
        IF v !~ '^\+[1-9][0-9]{6,14}$' THEN
            RAISE EXCEPTION 'malformed phone number %: expected E.164 such as +31612345678', quote_literal(p_value)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'email' THEN
        v := lower(btrim(p_value));
        IF v !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' THEN
            RAISE EXCEPTION 'malformed e-mail address %', quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'account' THEN
        v := btrim(p_value);
        IF length(v) > 200 THEN
            RAISE EXCEPTION 'account identifier longer than 200 characters' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'ip' THEN
        BEGIN
            v := host(btrim(p_value)::inet);
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'malformed IP address %', quote_literal(p_value) USING ERRCODE = 'invalid_parameter_value';
        END;
    ELSE
        RAISE EXCEPTION 'unknown identifier kind %: expected phone, email, account or ip', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    RETURN v;
END
$$;

-- {"phone": ["+31 6 1234 5678"], "email": "A@B.nl"} -> {"phone": ["+31612345678"], "email": ["a@b.nl"]}
CREATE OR REPLACE FUNCTION pgretention._normalize_identifiers(p_identifiers jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text;
    v_values jsonb;
    v_out jsonb := '{}';
    v_list text[];
BEGIN
    IF p_identifiers IS NULL OR jsonb_typeof(p_identifiers) <> 'object' OR p_identifiers = '{}'::jsonb THEN
        RAISE EXCEPTION 'identifiers must be a JSON object such as {"phone": ["+31612345678"]}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_kind, v_values IN SELECT key, value FROM jsonb_each(p_identifiers) LOOP
        IF jsonb_typeof(v_values) = 'string' THEN
            v_values := jsonb_build_array(v_values);
        END IF;
        IF jsonb_typeof(v_values) <> 'array' OR jsonb_array_length(v_values) = 0 THEN
            RAISE EXCEPTION 'identifiers of kind % must be a non-empty list', quote_literal(v_kind)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_list := ARRAY(SELECT DISTINCT pgretention._normalize_identifier(v_kind, x)
                        FROM jsonb_array_elements_text(v_values) x ORDER BY 1);
        v_out := v_out || jsonb_build_object(v_kind, to_jsonb(v_list));
    END LOOP;
    RETURN v_out;
END
$$;

-- Keyed hash of a normalised identifier (the key of purpose 'subject', created on first use).
CREATE OR REPLACE FUNCTION pgretention._identifier_hash(p_kind text, p_value text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hash text;
BEGIN
    EXECUTE format('SELECT encode(%I.hmac(convert_to($1, ''UTF8''), $2, ''sha256''), ''hex'')',
                   pgretention._pgcrypto_schema())
        INTO v_hash USING p_kind || ':' || p_value, pgretention._secret_key('subject');
    RETURN v_hash;
END
$$;

CREATE OR REPLACE FUNCTION pgretention._identifier_hashes(p_identifiers jsonb)
RETURNS text[]
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(pgretention._identifier_hash(k.key, v) ORDER BY k.key, v), '{}')
    FROM jsonb_each(p_identifiers) k CROSS JOIN LATERAL jsonb_array_elements_text(k.value) v
$$;
