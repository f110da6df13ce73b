"""Audit retention checkpoints, compliance report and metrics.

The chain head (last id and hash) lets verify detect records removed from the end of the audit
log; per action and object counters keep purge totals monotonic for metrics even after old audit
records have passed their own retention.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        -- ids are assigned by the chain trigger as last id + 1 (gapless); the sequence is unused
        DROP SEQUENCE pgretention.audit_log_id_seq;
        CREATE INDEX audit_log_at_idx ON pgretention.audit_log (at);
        CREATE INDEX audit_log_action_idx ON pgretention.audit_log (action, id);

        CREATE TABLE pgretention.audit_head (
            singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            last_id       bigint NOT NULL,
            last_hash     bytea NOT NULL,
            records_total bigint NOT NULL
        );
        COMMENT ON TABLE pgretention.audit_head IS
            'Head of the audit hash chain, maintained by the chain trigger: detects removed last records';

        CREATE TABLE pgretention.audit_counter (
            action  text NOT NULL,
            object  text NOT NULL DEFAULT '',
            records bigint NOT NULL DEFAULT 0,
            rows    bigint NOT NULL DEFAULT 0,
            last_at timestamptz NOT NULL,
            PRIMARY KEY (action, object)
        );
        COMMENT ON TABLE pgretention.audit_counter IS
            'Audit records and affected rows per action and object since install (monotonic, for metrics)';

        INSERT INTO pgretention.audit_head (last_id, last_hash, records_total)
        SELECT a.id, a.hash, (SELECT count(*) FROM pgretention.audit_log)
        FROM pgretention.audit_log a ORDER BY a.id DESC LIMIT 1;

        INSERT INTO pgretention.audit_counter (action, object, records, rows, last_at)
        SELECT a.action, coalesce(a.object, ''), count(*),
               coalesce(sum(CASE WHEN jsonb_typeof(a.details -> 'rows') = 'number'
                                 THEN (a.details ->> 'rows')::numeric::bigint END), 0),
               max(a.at)
        FROM pgretention.audit_log a GROUP BY a.action, coalesce(a.object, '');
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
