"""Partition engine catalog: managed tables, retention classes, class members, partition operations.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgretention.managed_table (
            id                 int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_schema       name NOT NULL,
            table_name         name NOT NULL,
            time_column        name NOT NULL,
            time_type          text NOT NULL CHECK (time_type IN ('timestamptz', 'timestamp', 'date')),
            time_zone          text NOT NULL DEFAULT 'UTC',
            partition_interval interval NOT NULL CHECK (partition_interval > interval '0'),
            premake            int NOT NULL DEFAULT 4 CHECK (premake BETWEEN 1 AND 1000),
            class_column       name,
            default_class      text NOT NULL,
            min_drop_after     interval,
            max_drop_after     interval,
            on_expiry          text NOT NULL DEFAULT 'drop' CHECK (on_expiry IN ('drop', 'archive')),
            archive_schema     name,
            null_time_action   text NOT NULL DEFAULT 'keep' CHECK (null_time_action IN ('keep', 'purge')),
            created_at         timestamptz NOT NULL DEFAULT now(),
            created_by         name NOT NULL DEFAULT current_user,
            UNIQUE (table_schema, table_name),
            CHECK ((on_expiry = 'archive') = (archive_schema IS NOT NULL))
        );

        CREATE TABLE pgretention.retention_class (
            table_id        int NOT NULL REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            class_name      text NOT NULL CHECK (class_name ~ '^[a-z][a-z0-9_]{0,29}$'),
            anonymise_after interval,
            drop_after      interval NOT NULL CHECK (drop_after > interval '0'),
            parent_schema   name NOT NULL,
            parent_name     name NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_id, class_name),
            CHECK (anonymise_after IS NULL OR (anonymise_after > interval '0' AND anonymise_after < drop_after))
        );

        CREATE TABLE pgretention.class_member (
            table_id     int NOT NULL,
            value        text NOT NULL,
            class_name   text NOT NULL,
            routed_class text NOT NULL,
            since        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_id, value),
            FOREIGN KEY (table_id, class_name) REFERENCES pgretention.retention_class ON DELETE CASCADE,
            FOREIGN KEY (table_id, routed_class) REFERENCES pgretention.retention_class ON DELETE CASCADE
        );
        COMMENT ON COLUMN pgretention.class_member.routed_class IS
            'class partition whose value list holds the value; differs from class_name after a move'
            ' of a member that already had rows';

        CREATE TABLE pgretention.partition_op (
            id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            table_id         int NOT NULL REFERENCES pgretention.managed_table (id) ON DELETE CASCADE,
            class_name       text NOT NULL,
            partition_schema name NOT NULL,
            partition_name   name NOT NULL,
            range_from       text,
            range_to         text,
            op               text NOT NULL CHECK (op IN ('drop', 'archive')),
            state            text NOT NULL CHECK (state IN ('detached', 'done')),
            rows_estimate    bigint,
            bytes            bigint,
            rows_rescued     bigint NOT NULL DEFAULT 0,
            lock_attempts    int NOT NULL DEFAULT 1,
            run_id           bigint,
            detached_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            done_at          timestamptz
        );
        CREATE INDEX partition_op_pending_idx ON pgretention.partition_op (id) WHERE state = 'detached';
        CREATE INDEX partition_op_table_idx ON pgretention.partition_op (table_id, done_at);
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
