"""Time-first layout (classes inside shared time partitions) and distributed tables (Citus).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- 'class': LIST by class column, each class RANGE by time (one pg_partman set per class);
        -- 'time': RANGE by time only, every class in the same partitions (the layout Citus can
        -- distribute: it refuses multi-level partitioning)
        -- (a Citus table's distribution column is read from Citus's catalog, never stored here)
        ALTER TABLE pgretention.managed_table
            ADD COLUMN layout text NOT NULL DEFAULT 'class' CHECK (layout IN ('class', 'time'));

        -- time-first layout: the rows of a class shorter than the table's longest class are deleted
        -- from each shared partition once it is past that class's period; one row per partition
        -- and class, done when nothing of the class is left in it but held rows
        CREATE TABLE pgretention.class_purge (
            table_id         int NOT NULL REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            class_name       text NOT NULL,
            range_from       text NOT NULL,
            partition_schema name NOT NULL,
            partition_name   name NOT NULL,
            rows_deleted     bigint NOT NULL DEFAULT 0,
            done             boolean NOT NULL DEFAULT false,
            updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (table_id, class_name, range_from)
        );
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
