-- Secret keys, one store for every engine: pgretention.keyring (purpose, key, created_at,
-- rotated_at, destroyed_at), readable by the owner of the schema only. A key is 32 random bytes
-- (pgcrypto's gen_random_bytes), created on first use. Purposes in use:
--   anon:<epoch>      keyed pseudonyms of one quarter (anonymiser; rotated and destroyed per epoch)
--   field:<purpose>   encrypted fields (the PGP passphrase is the key in base64)
--   subject           keyed hashes of data-subject identifiers
--   entity            keyed hashes written by the entity engine's anonymise rules
-- Destroying a key keeps its row (and dates) and removes the key: what it protected can no longer
-- be linked.
-- (The table is not called secret_key: its array type would be _secret_key, which PostgreSQL
-- reads as a cast in pgretention._secret_key('subject').)

-- Where pgcrypto lives (recorded at install).
CREATE OR REPLACE FUNCTION pgretention._pgcrypto_schema()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT i.pgcrypto_schema FROM pgretention.installation i $$;

-- The key of a purpose, created on first use (then audited as key.create on p_audit, when given).
-- Raises when the key was destroyed.
CREATE OR REPLACE FUNCTION pgretention._secret_key(p_purpose text, p_audit text DEFAULT NULL)
RETURNS bytea
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k pgretention.keyring;
    v_key bytea;
BEGIN
    SELECT * INTO k FROM pgretention.keyring s WHERE s.purpose = p_purpose;
    IF FOUND AND k.destroyed_at IS NOT NULL THEN
        RAISE EXCEPTION 'the secret key % was destroyed at %', p_purpose, k.destroyed_at
            USING ERRCODE = 'object_not_in_prerequisite_state';
    ELSIF FOUND THEN
        RETURN k.key;
    END IF;
    EXECUTE format('SELECT %I.gen_random_bytes(32)', pgretention._pgcrypto_schema()) INTO v_key;
    INSERT INTO pgretention.keyring (purpose, key) VALUES (p_purpose, v_key) ON CONFLICT (purpose) DO NOTHING;
    IF FOUND AND p_audit IS NOT NULL THEN
        PERFORM pgretention._audit('key.create', p_audit, '{}');
    END IF;
    RETURN pgretention._secret_key(p_purpose);  -- the key a concurrent first use stored, if it won
END
$$;

-- Replace the key of a purpose by a new one (a destroyed key comes back as a new key).
CREATE OR REPLACE FUNCTION pgretention._secret_key_rotate(p_purpose text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key bytea;
BEGIN
    EXECUTE format('SELECT %I.gen_random_bytes(32)', pgretention._pgcrypto_schema()) INTO v_key;
    INSERT INTO pgretention.keyring AS s (purpose, key) VALUES (p_purpose, v_key)
    ON CONFLICT (purpose) DO UPDATE SET key = excluded.key, rotated_at = now(), destroyed_at = NULL;
END
$$;

-- Destroy the live key of a purpose; false when there is none.
CREATE OR REPLACE FUNCTION pgretention._secret_key_destroy(p_purpose text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE pgretention.keyring SET key = NULL, destroyed_at = now()
    WHERE purpose = p_purpose AND destroyed_at IS NULL;
    RETURN FOUND;
END
$$;
