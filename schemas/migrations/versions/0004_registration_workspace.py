"""registrations belong to a workspace (the tenant whose WhatsApp session sends)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column("registrations", sa.Column("workspace_id", sa.String(64), nullable=False,
                                             server_default="default"))


def downgrade() -> None:
    op.drop_column("registrations", "workspace_id")
