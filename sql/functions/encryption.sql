-- Encrypted fields (contact-list fields users mark "encrypted"): values are stored as pgcrypto
-- PGP-symmetric ciphertext (bytea) under a key per purpose kept in pgretention.field_key, which
-- only the owner of the schema reads. Applications call encrypt_field on write; roles that were
-- granted EXECUTE on decrypt_field (pgretention_admin, and whoever the DBA grants it to) read.

CREATE OR REPLACE FUNCTION pgretention._purpose_key(p_purpose text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key text;
BEGIN
    IF p_purpose IS NULL OR p_purpose !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid key purpose %: use lower-case letters, digits and _', coalesce(quote_literal(p_purpose), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT key INTO v_key FROM pgretention.field_key WHERE purpose = p_purpose;
    IF NOT FOUND THEN
        EXECUTE format('SELECT encode(%I.gen_random_bytes(32), ''base64'')', (SELECT pgcrypto_schema FROM pgretention.installation))
            INTO v_key;
        INSERT INTO pgretention.field_key (purpose, key) VALUES (p_purpose, v_key) ON CONFLICT (purpose) DO NOTHING;
        SELECT key INTO v_key FROM pgretention.field_key WHERE purpose = p_purpose;
        PERFORM pgretention._audit('key.create', 'field:' || p_purpose, '{}');
    END IF;
    RETURN v_key;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.encrypt_field(p_value text, p_purpose text)
RETURNS bytea
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_out bytea;
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT %I.pgp_sym_encrypt($1, $2, ''cipher-algo=aes256'')', (SELECT pgcrypto_schema FROM pgretention.installation))
        INTO v_out USING p_value, pgretention._purpose_key(p_purpose);
    RETURN v_out;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.decrypt_field(p_value bytea, p_purpose text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_out text;
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT %I.pgp_sym_decrypt($1, $2)', (SELECT pgcrypto_schema FROM pgretention.installation))
        INTO v_out USING p_value, pgretention._purpose_key(p_purpose);
    RETURN v_out;
END
$$;
