"""Online adoption of existing plain tables.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgretention.adoption (
            id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_schema     name NOT NULL,
            table_name       name NOT NULL,
            table_id         int REFERENCES pgretention.managed_table (id) ON DELETE SET NULL,
            time_column      name NOT NULL,
            time_type        text NOT NULL,
            time_zone        text NOT NULL DEFAULT 'UTC',
            historical_name  name NOT NULL,
            constraint_name  name NOT NULL,
            cutover          text NOT NULL,
            cutover_at       timestamptz NOT NULL,
            key_choice       text NOT NULL CHECK (key_choice IN ('none', 'includes_time', 'local', 'add_time')),
            state            text NOT NULL CHECK (state IN ('prepared', 'validated', 'adopted', 'done',
                                                            'unadopted', 'cancelled')),
            settings         jsonb NOT NULL,
            details          jsonb NOT NULL DEFAULT '{}',
            rows_purged      bigint NOT NULL DEFAULT 0,
            scan_block       bigint NOT NULL DEFAULT 0,
            started_at       timestamptz NOT NULL DEFAULT now(),
            adopted_at       timestamptz,
            finished_at      timestamptz,
            started_by       name NOT NULL DEFAULT current_user
        );
        CREATE UNIQUE INDEX adoption_active_idx ON pgretention.adoption (table_schema, table_name)
            WHERE state IN ('prepared', 'validated', 'adopted');
        -- epoch integer time columns (seconds since 1970-01-01 UTC)
        ALTER TABLE pgretention.managed_table DROP CONSTRAINT managed_table_time_type_check;
        ALTER TABLE pgretention.managed_table ADD CONSTRAINT managed_table_time_type_check
            CHECK (time_type IN ('timestamptz', 'timestamp', 'date', 'epoch'));
        COMMENT ON TABLE pgretention.adoption IS
            'plain tables converted online into managed partitioned tables; the historical partition'
            ' holds the rows written before the cut-over and is emptied as they expire';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
