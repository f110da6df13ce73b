"""Entity retention engine (row-level rules, hierarchies, notices).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pgretention.entity_rule (
            id                 int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            rule_name          text NOT NULL UNIQUE CHECK (rule_name ~ '^[a-z][a-z0-9_]{0,62}$'),
            table_schema       name NOT NULL,
            table_name         name NOT NULL,
            key_column         name NOT NULL,
            key_type           text NOT NULL,
            activity           jsonb NOT NULL CHECK (jsonb_typeof(activity) = 'array'),
            period             interval NOT NULL CHECK (period > interval '0'),
            action             text NOT NULL CHECK (action IN ('delete', 'anonymise')),
            anonymise          jsonb,
            dependants         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(dependants) = 'array'),
            parent_column      name,
            exempt_column      name,
            notice_period      interval CHECK (notice_period IS NULL OR notice_period > interval '0'),
            enabled            boolean NOT NULL DEFAULT true,
            rows_deleted       bigint NOT NULL DEFAULT 0,
            rows_anonymised    bigint NOT NULL DEFAULT 0,
            dependants_deleted bigint NOT NULL DEFAULT 0,
            batches            bigint NOT NULL DEFAULT 0,
            last_batch_at      timestamptz,
            last_run_id        bigint,
            last_error         text,
            created_at         timestamptz NOT NULL DEFAULT now(),
            created_by         name NOT NULL DEFAULT current_user,
            CHECK ((action = 'anonymise') = (anonymise IS NOT NULL))
        );
        COMMENT ON TABLE pgretention.entity_rule IS
            'Row-level retention rules over ordinary tables (accounts, customers, consent proofs, leads)';

        -- Rows of a rule that will be deleted within the notice period, listed per parent
        -- (reseller) so that the parent can warn them; removed when the row becomes active again.
        CREATE TABLE pgretention.entity_notice (
            rule_id         int NOT NULL REFERENCES pgretention.entity_rule (id) ON DELETE CASCADE,
            key             text NOT NULL,
            parent_key      text,
            first_listed_at timestamptz NOT NULL,
            expires_at      timestamptz NOT NULL,
            PRIMARY KEY (rule_id, key)
        );
        CREATE INDEX entity_notice_parent_idx ON pgretention.entity_notice (rule_id, parent_key);

        -- Work set of a rule's current run: candidates whose whole subtree is expired. Rebuilt at
        -- the start of every run, so a run killed half-way is simply resumed by the next one.
        CREATE TABLE pgretention.entity_work (
            rule_id    int NOT NULL REFERENCES pgretention.entity_rule (id) ON DELETE CASCADE,
            key        text NOT NULL,
            parent_key text,
            expires_at timestamptz,
            pass       int NOT NULL DEFAULT 0,
            PRIMARY KEY (rule_id, key)
        );
        CREATE INDEX entity_work_pass_idx ON pgretention.entity_work (rule_id, pass, key);

        -- Key of the keyed hash (HMAC-SHA-256) used by anonymise rules. Readable by the owner only.
        CREATE TABLE pgretention.entity_hash_key (
            singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            hash_key   bytea NOT NULL CHECK (octet_length(hash_key) >= 32),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        INSERT INTO pgretention.entity_hash_key (hash_key)
        SELECT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                              || gen_random_uuid()::text, '-', ''), 'hex');
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
