"""the dead-letter index that ops search and replay, and the audit log of replays and discards

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letter_actions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("target", sa.String(16)),
        sa.Column("selection", JSONB, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("row_ids", ARRAY(sa.BigInteger), nullable=False, server_default="{}"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("action IN ('replay', 'discard')", name="dead_letter_actions_action_valid"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("dlq_topic", sa.String(200), nullable=False),
        sa.Column("dlq_partition", sa.Integer, nullable=False),
        sa.Column("dlq_offset", sa.BigInteger, nullable=False),
        sa.Column("original_topic", sa.String(200), nullable=False),
        sa.Column("original_partition", sa.Integer),
        sa.Column("original_offset", sa.BigInteger),
        sa.Column("message_key", sa.LargeBinary),
        sa.Column("key_text", sa.String(400)),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("schema_name", sa.String(100)),
        sa.Column("payload_json", JSONB),
        sa.Column("event_type", sa.String(100)),
        sa.Column("error_class", sa.String(200), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("consumer_group", sa.String(300)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("replay_count", sa.Integer, nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("first_failed_at", sa.DateTime(timezone=True)),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("clock_timestamp()")),
        sa.Column("state", sa.String(16), nullable=False, server_default="open"),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("resolved_action_id", sa.BigInteger, sa.ForeignKey("dead_letter_actions.id")),
        sa.Column("replayed_to", sa.String(200)),
        sa.UniqueConstraint("dlq_topic", "dlq_partition", "dlq_offset", name="dead_letters_position"),
        sa.CheckConstraint("state IN ('open', 'replayed', 'discarded')", name="dead_letters_state_valid"),
    )
    # The failed-jobs screen's usual questions: what is open on a topic, of an error class,
    # for a key, newest first.
    op.create_index("dead_letters_state_topic", "dead_letters", ["state", "original_topic", "id"])
    op.create_index("dead_letters_error_class", "dead_letters", ["error_class", "id"])
    op.create_index("dead_letters_key", "dead_letters", ["key_text"])
    op.create_index("dead_letters_last_failed", "dead_letters", ["last_failed_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("dead_letter_actions")
