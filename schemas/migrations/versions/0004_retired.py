"""retired: it added a column to an example's domain table, which the example app owns now

Revision ID: 0004
Revises: 0003

Kept so the revision chain stays whole; databases migrated before keep the column.
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
