-- Encrypted fields (contact-list fields users mark "encrypted"): values are stored as pgcrypto
-- PGP-symmetric ciphertext (bytea) under a key per purpose, kept in the secret-key store
-- (core/keys.sql, purpose field:<purpose>), which only the owner of the schema reads. Applications
-- call field_encrypt on write; roles that were granted EXECUTE on field_decrypt
-- (pgretention_admin, and whoever the DBA grants it to) read.

-- The PGP passphrase of a purpose: its key in base64 (created on first use, audited as
-- key.create of field:<purpose>).
CREATE OR REPLACE FUNCTION pgretention._field_passphrase(p_purpose text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_purpose IS NULL OR p_purpose !~ '^[a-z][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid key purpose %: use lower-case letters, digits and _', coalesce(quote_literal(p_purpose), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN encode(pgretention._secret_key('field:' || p_purpose, 'field:' || p_purpose), 'base64');
END
$$;

CREATE OR REPLACE FUNCTION pgretention.field_encrypt(p_value text, p_purpose text)
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
    EXECUTE format('SELECT %I.pgp_sym_encrypt($1, $2, ''cipher-algo=aes256'')', pgretention._pgcrypto_schema())
        INTO v_out USING p_value, pgretention._field_passphrase(p_purpose);
    RETURN v_out;
END
$$;

CREATE OR REPLACE FUNCTION pgretention.field_decrypt(p_value bytea, p_purpose text)
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
    EXECUTE format('SELECT %I.pgp_sym_decrypt($1, $2)', pgretention._pgcrypto_schema())
        INTO v_out USING p_value, pgretention._field_passphrase(p_purpose);
    RETURN v_out;
END
$$;
