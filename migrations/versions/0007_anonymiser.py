"""Anonymiser: column rules, epoch keys, partition rewrite operations, roll-ups.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgretention.anon_rule (
            table_id    int NOT NULL REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            column_name name NOT NULL,
            method      text NOT NULL CHECK (method IN ('pseudonym', 'e164_prefix', 'ip_prefix', 'null', 'constant',
                                                        'time_trunc', 'redact', 'jsonb_drop', 'keep')),
            param       text,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_id, column_name)
        );

        -- secret keys of the keyed pseudonyms, one per epoch (calendar quarter of the row's time);
        -- readable by the owner of the schema only. Destroying a key makes its pseudonyms unlinkable.
        CREATE TABLE pgretention.anon_key (
            epoch        text PRIMARY KEY,
            key          bytea,
            created_at   timestamptz NOT NULL DEFAULT now(),
            rotated_at   timestamptz,
            destroyed_at timestamptz,
            CHECK ((key IS NULL) = (destroyed_at IS NOT NULL))
        );

        -- one row per partition rewrite: prepared (copy table and capture trigger exist), swapped
        -- (the anonymised copy is attached, the original detached), done (the original dropped)
        CREATE TABLE pgretention.anon_op (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_id        int NOT NULL REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            class_name      text NOT NULL,
            partition_schema name NOT NULL,
            partition_name  name NOT NULL,
            copy_name       name NOT NULL,
            range_from      text NOT NULL,
            range_to        text NOT NULL,
            state           text NOT NULL CHECK (state IN ('prepared', 'swapped', 'done')),
            rows_copied     bigint,
            started_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            done_at         timestamptz,
            UNIQUE (table_id, class_name, range_from)
        );

        -- keys of encrypted fields (per purpose); readable by the owner of the schema only
        CREATE TABLE pgretention.field_key (
            purpose    text PRIMARY KEY CHECK (purpose ~ '^[a-z][a-z0-9_]{0,39}$'),
            key        text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE pgretention.rollup (
            id             int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_id       int NOT NULL REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            name           text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,29}$'),
            group_by       jsonb NOT NULL,
            measures       jsonb NOT NULL,
            min_group_size int NOT NULL DEFAULT 5 CHECK (min_group_size >= 1),
            target_schema  name NOT NULL,
            target_name    name NOT NULL,
            UNIQUE (table_id, name)
        );
        CREATE TABLE pgretention.rollup_done (
            rollup_id   int NOT NULL REFERENCES pgretention.rollup (id) ON DELETE CASCADE,
            class_name  text NOT NULL,
            range_from  text NOT NULL,
            range_to    text NOT NULL,
            groups      bigint NOT NULL,
            suppressed_groups bigint NOT NULL,
            suppressed_rows   bigint NOT NULL,
            done_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (rollup_id, class_name, range_from)
        );
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
