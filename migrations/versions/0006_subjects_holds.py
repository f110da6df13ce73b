"""Data-subject requests and legal holds.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- tables that hold personal data about subjects, and how erasure treats them
        CREATE TABLE pgretention.subject_table (
            id             int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_schema   name NOT NULL,
            table_name     name NOT NULL,
            tenant_column  name,
            time_column    name,
            erasure        text NOT NULL DEFAULT 'delete' CHECK (erasure IN ('delete', 'anonymise')),
            anonymise      jsonb NOT NULL DEFAULT '{}',
            statutory_note text,
            UNIQUE (table_schema, table_name)
        );
        CREATE TABLE pgretention.subject_column (
            table_id    int NOT NULL REFERENCES pgretention.subject_table (id) ON DELETE CASCADE,
            column_name name NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('phone', 'email', 'account', 'ip')),
            PRIMARY KEY (table_id, column_name)
        );
        CREATE TABLE pgretention.tenant (
            name     text PRIMARY KEY CHECK (name <> ''),
            added_at timestamptz NOT NULL DEFAULT now()
        );
        -- key for the keyed hashes of identifiers (readable by the owner only)
        CREATE TABLE pgretention.subject_hash_key (
            id         int PRIMARY KEY CHECK (id = 1),
            key        bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE pgretention.subject_request (
            id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kind             text NOT NULL CHECK (kind IN ('access', 'erasure', 'restriction', 'lift_restriction')),
            identifiers      jsonb,
            identifier_hashes text[] NOT NULL,
            tenant           text REFERENCES pgretention.tenant (name),
            external_ref     text,
            received_at      timestamptz NOT NULL,
            due_at           timestamptz NOT NULL,
            extended_due_at  timestamptz,
            extension_reason text,
            status           text NOT NULL DEFAULT 'open'
                             CHECK (status IN ('open', 'fulfilled', 'partially_fulfilled', 'rejected')),
            fulfilled_at     timestamptz,
            result           jsonb NOT NULL DEFAULT '{}',
            CHECK ((status = 'open') = (fulfilled_at IS NULL)),
            CHECK (status = 'open' OR identifiers IS NULL)
        );
        CREATE INDEX subject_request_open_idx ON pgretention.subject_request (due_at) WHERE status = 'open';
        CREATE INDEX subject_request_fulfilled_idx ON pgretention.subject_request (fulfilled_at);

        CREATE TABLE pgretention.restriction (
            kind        text NOT NULL CHECK (kind IN ('phone', 'email', 'account', 'ip')),
            value       text NOT NULL,
            tenant      text,
            request_id  bigint,
            since       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (kind, value)
        );

        CREATE TABLE pgretention.legal_hold (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            reason        text NOT NULL CHECK (reason <> ''),
            reference     text NOT NULL CHECK (reference <> ''),
            subject_kind  text CHECK (subject_kind IN ('phone', 'email', 'account', 'ip')),
            subject_value text,
            table_id      int REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            class_name    text,
            time_from     timestamptz,
            time_to       timestamptz,
            set_by        name NOT NULL DEFAULT session_user,
            set_at        timestamptz NOT NULL DEFAULT now(),
            ends_at       timestamptz,
            released_at   timestamptz,
            released_by   name,
            CHECK ((subject_kind IS NULL) = (subject_value IS NULL)),
            CHECK (subject_kind IS NOT NULL OR table_id IS NOT NULL),
            CHECK (time_from IS NULL OR time_to IS NULL OR time_from < time_to)
        );
        CREATE INDEX legal_hold_active_idx ON pgretention.legal_hold (subject_kind, subject_value)
            WHERE released_at IS NULL;

        -- rows kept from dropped partitions because a hold covered them
        CREATE TABLE pgretention.hold_store (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_schema name NOT NULL,
            table_name   name NOT NULL,
            partition    name NOT NULL,
            row_time     timestamptz,
            row_data     jsonb NOT NULL,
            hold_ids     bigint[] NOT NULL,
            stored_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX hold_store_table_idx ON pgretention.hold_store (table_schema, table_name);
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
