-- Pseudonym keys: one per epoch (the calendar quarter of a row's time), kept in the secret-key
-- store (core/keys.sql) under purpose anon:<epoch>. Rotating an epoch's key changes the pseudonyms
-- written from then on; destroying it makes that epoch's pseudonyms unlinkable for good.

CREATE OR REPLACE FUNCTION pgretention._anon_epoch(p_abs timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT to_char(p_abs AT TIME ZONE 'UTC', 'YYYY"q"Q') $$;

-- An epoch name such as 2026q3, or an error naming it.
CREATE OR REPLACE FUNCTION pgretention._check_epoch(p_epoch text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_epoch IS NULL OR p_epoch !~ '^[0-9]{4}q[1-4]$' THEN
        RAISE EXCEPTION 'invalid epoch %: expected a quarter such as 2026q3', coalesce(quote_literal(p_epoch), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_epoch;
END
$$;

-- The secret key of an epoch, created on first use (audited as key.create of the epoch). Raises
-- when it was destroyed.
CREATE OR REPLACE FUNCTION pgretention._epoch_key(p_epoch text)
RETURNS bytea
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgretention._secret_key('anon:' || pgretention._check_epoch(p_epoch), p_epoch) $$;

CREATE OR REPLACE FUNCTION pgretention.anon_key_rotate(p_epoch text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgretention._secret_key_rotate('anon:' || pgretention._check_epoch(p_epoch));
    PERFORM pgretention._audit('key.rotate', p_epoch, '{}');
END
$$;

CREATE OR REPLACE FUNCTION pgretention.anon_key_destroy(p_epoch text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_epoch IS NULL OR NOT pgretention._secret_key_destroy('anon:' || p_epoch) THEN
        RAISE EXCEPTION 'no live pseudonym key for epoch %', coalesce(quote_literal(p_epoch), 'NULL')
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM pgretention._audit('key.destroy', p_epoch, '{}');
END
$$;

-- Keys of every epoch a partition range touches, as {epoch: hex}.
CREATE OR REPLACE FUNCTION pgretention._anon_keys(p_from timestamptz, p_to timestamptz)
RETURNS jsonb
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(e, encode(pgretention._epoch_key(e), 'hex')), '{}')
    FROM (SELECT DISTINCT pgretention._anon_epoch(d) AS e
          FROM generate_series(p_from, p_to - interval '1 microsecond', interval '1 month') d
          UNION SELECT pgretention._anon_epoch(p_to - interval '1 microsecond')) x
$$;

-- The epochs and their keys, as the anonymiser's key table showed them: admins and auditors are
-- granted every column but key (grants.sql); the keys stay readable by the owner only.
CREATE OR REPLACE VIEW pgretention.anon_key AS
SELECT substr(s.purpose, 6) AS epoch, s.key, s.created_at, s.rotated_at, s.destroyed_at
FROM pgretention.keyring s
WHERE s.purpose LIKE 'anon:%';
