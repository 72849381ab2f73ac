"""sharded outbox with commit notifications, messaging sessions, ingest idempotency

Revision ID: 0002
Revises: 0001
"""

import zlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of producers.outbox's OUTBOX_SHARDS and shard_of(): a migration must not
# change meaning when the application code does.
_SHARDS = 32


def _shard_of(key: str) -> int:
    return zlib.crc32(key.encode("utf-8")) % _SHARDS


def upgrade() -> None:
    op.add_column("outbox", sa.Column("shard", sa.SmallInteger, nullable=True))
    conn = op.get_bind()
    keys = conn.execute(sa.text("SELECT DISTINCT message_key FROM outbox")).scalars().all()
    for key in keys:
        conn.execute(sa.text("UPDATE outbox SET shard = :shard WHERE message_key = :key"),
                     {"shard": _shard_of(key), "key": key})
    op.alter_column("outbox", "shard", nullable=False)
    # Event ids are unique by construction (uuid4 or the upstream's own); the index only
    # cost every writer a random-order insert and every relay batch a delete.
    op.drop_constraint("outbox_event_id_key", "outbox", type_="unique")
    # Rows live for milliseconds: vacuum after a fixed number of deletions, not a fraction
    # of a table that is nearly always empty, so the table stays small under load.
    op.execute("ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, "
               "autovacuum_vacuum_threshold = 20000, autovacuum_vacuum_insert_scale_factor = 0, "
               "autovacuum_vacuum_insert_threshold = 20000, autovacuum_vacuum_cost_delay = 0)")
    # One notification per inserting transaction, delivered at its commit: relays wake at
    # once instead of polling. Identical notifications within a transaction are folded.
    op.execute("""
        CREATE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('herald_outbox', '');
            RETURN NULL;
        END $$""")
    op.execute("CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
               "FOR EACH STATEMENT EXECUTE FUNCTION herald_outbox_notify()")
    op.create_table(
        "messaging_sessions",
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False, index=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("gateway_instance", sa.String(200), nullable=True),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('qr_pending', 'connected', 'disconnected')",
                           name="messaging_sessions_status_valid"),
    )
    op.create_table(
        "ingest_requests",
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("body_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=False),
        sa.Column("response", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True,
                  server_default=sa.text("clock_timestamp()")),
    )


def downgrade() -> None:
    op.drop_table("ingest_requests")
    op.drop_table("messaging_sessions")
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION herald_outbox_notify()")
    op.execute("ALTER TABLE outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, "
               "autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold, "
               "autovacuum_vacuum_cost_delay)")
    op.create_unique_constraint("outbox_event_id_key", "outbox", ["event_id"])
    op.drop_column("outbox", "shard")
