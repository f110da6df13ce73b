"""Foundation catalog: installation record, settings, job runs, hash-chained audit log.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgretention.installation (
            singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            installed_at       timestamptz NOT NULL DEFAULT now(),
            installed_by       name NOT NULL DEFAULT current_user,
            partman_schema     name NOT NULL,
            pgcrypto_schema    name NOT NULL,
            created_extensions text[] NOT NULL DEFAULT '{}',
            created_schemas    text[] NOT NULL DEFAULT '{}',
            created_roles      text[] NOT NULL DEFAULT '{}'
        );
        COMMENT ON TABLE pgretention.installation IS
            'What the installer created, so that uninstall removes exactly that';

        CREATE TABLE pgretention.setting (
            name        text PRIMARY KEY,
            value       text NOT NULL,
            description text NOT NULL
        );

        CREATE TABLE pgretention.job_run (
            id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            finished_at    timestamptz,
            runner         text NOT NULL,
            reference_time timestamptz NOT NULL,
            status         text NOT NULL DEFAULT 'running'
                           CHECK (status IN ('running', 'ok', 'partial', 'failed', 'skipped')),
            summary        jsonb NOT NULL DEFAULT '{}',
            message        text
        );
        CREATE INDEX job_run_started_idx ON pgretention.job_run (started_at);

        CREATE SEQUENCE pgretention.audit_log_id_seq;
        CREATE TABLE pgretention.audit_log (
            id          bigint PRIMARY KEY,
            at          timestamptz NOT NULL DEFAULT clock_timestamp(),
            session_role name NOT NULL DEFAULT session_user,
            application text NOT NULL DEFAULT coalesce(current_setting('application_name', true), ''),
            action      text NOT NULL,
            object      text,
            details     jsonb NOT NULL DEFAULT '{}',
            outcome     text NOT NULL DEFAULT 'ok',
            prev_hash   bytea,
            hash        bytea NOT NULL
        );
        COMMENT ON TABLE pgretention.audit_log IS
            'Append-only, hash-chained record of every destructive or policy action';
        ALTER SEQUENCE pgretention.audit_log_id_seq OWNED BY pgretention.audit_log.id;
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
