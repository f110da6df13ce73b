"""Settings with a kind; one secret-key store instead of four key tables.

Every setting row gets the kind its value must have (interval, int, bool, cron, text); the kinds of
the known settings are set by ``sql/core/settings.sql``, replayed right after this revision, so an
existing row carries ``text`` only until then.

The keys of the anonymiser (``anon_key``, one per epoch), of encrypted fields (``field_key``), of
identifier hashes (``subject_hash_key``) and of the entity engine (``entity_hash_key``) move into
``keyring`` under the purposes ``anon:<epoch>``, ``field:<purpose>``, ``subject`` and ``entity``,
byte for byte, with their dates: pseudonyms, hashes and ciphertexts made before stay valid. A field
key was stored as the base64 text of 32 random bytes (the PGP passphrase); the store keeps the
bytes, and the passphrase (their base64 text) is checked to come back unchanged.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE pgretention.setting
            ADD COLUMN kind text NOT NULL DEFAULT 'text'
                CHECK (kind IN ('interval', 'int', 'bool', 'cron', 'text'));
        ALTER TABLE pgretention.setting ALTER COLUMN kind DROP DEFAULT;

        -- secret keys of every engine, readable by the owner of the schema only; destroying a key
        -- keeps its row and dates and removes the key
        CREATE TABLE pgretention.keyring (
            purpose      text PRIMARY KEY CHECK (purpose ~ '^[a-z]+(:[a-z0-9_]{1,40})?$'),
            key          bytea CHECK (octet_length(key) >= 32),
            created_at   timestamptz NOT NULL DEFAULT now(),
            rotated_at   timestamptz,
            destroyed_at timestamptz,
            CHECK ((key IS NULL) = (destroyed_at IS NOT NULL))
        );
        COMMENT ON TABLE pgretention.keyring IS
            'Secret keys of pseudonyms, identifier hashes and encrypted fields, one per purpose (owner-only)';

        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pgretention.field_key f
                       WHERE encode(decode(f.key, 'base64'), 'base64') <> f.key) THEN
                RAISE EXCEPTION 'a key in pgretention.field_key is not the base64 text of its bytes;'
                    ' it cannot move to pgretention.keyring unchanged';
            END IF;
        END
        $$;
        INSERT INTO pgretention.keyring (purpose, key, created_at, rotated_at, destroyed_at)
        SELECT 'anon:' || a.epoch, a.key, a.created_at, a.rotated_at, a.destroyed_at FROM pgretention.anon_key a;
        INSERT INTO pgretention.keyring (purpose, key, created_at)
        SELECT 'field:' || f.purpose, decode(f.key, 'base64'), f.created_at FROM pgretention.field_key f;
        INSERT INTO pgretention.keyring (purpose, key, created_at)
        SELECT 'subject', s.key, s.created_at FROM pgretention.subject_hash_key s;
        INSERT INTO pgretention.keyring (purpose, key, created_at)
        SELECT 'entity', e.hash_key, e.created_at FROM pgretention.entity_hash_key e;

        DROP TABLE pgretention.anon_key, pgretention.field_key, pgretention.subject_hash_key,
            pgretention.entity_hash_key;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
