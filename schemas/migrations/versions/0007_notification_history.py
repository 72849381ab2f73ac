"""every moment of each notification's story: its requests, replays and outcomes

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KINDS = ("requested", "replayed", "sent", "retry_scheduled", "dead_lettered", "failed")


def upgrade() -> None:
    op.create_table(
        "notification_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source_topic", sa.String(200), nullable=False),
        sa.Column("source_partition", sa.Integer, nullable=False),
        sa.Column("source_offset", sa.BigInteger, nullable=False),
        sa.Column("notification_id", sa.String(200), nullable=False),
        sa.Column("subject_id", sa.String(400), nullable=False),
        sa.Column("notification_type", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("recipient", sa.String(400)),
        sa.Column("event_type", sa.String(100)),
        sa.Column("event_fields", JSONB),
        sa.Column("attempts", sa.Integer),
        sa.Column("error_class", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("provider_message_id", sa.String(200)),
        sa.Column("gateway_instance", sa.String(200)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.UniqueConstraint("source_topic", "source_partition", "source_offset",
                            name="notification_history_position"),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in KINDS)})",
                           name="notification_history_kind_valid"),
    )
    for column in ("notification_id", "subject_id", "recipient", "occurred_at"):
        op.create_index(f"ix_notification_history_{column}", "notification_history", [column])


def downgrade() -> None:
    op.drop_table("notification_history")
