"""Herald's own tables: the outbox domain changes are written to, the gateway channel's
sessions, the ingest idempotency keys, the index of dead letters that ops search and replay
(with its audit log) and the API tokens. Domain tables belong to the services (see examples/)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SESSION_STATUSES = ("qr_pending", "connected", "disconnected")


class Base(DeclarativeBase):
    pass


class MessagingSession(Base):
    """A WhatsApp gateway session as the database declares it (the gateways may disagree)."""

    __tablename__ = "messaging_sessions"

    session_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(32))
    gateway_instance: Mapped[str | None] = mapped_column(sa.String(200))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint("status IN ('qr_pending', 'connected', 'disconnected')",
                           name="messaging_sessions_status_valid"),
    )


class IngestRequest(Base):
    """An HTTP ingest request seen under an Idempotency-Key, and the answer it got."""

    __tablename__ = "ingest_requests"

    idempotency_key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    body_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    status_code: Mapped[int] = mapped_column(sa.SmallInteger)
    response: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), index=True)


class OutboxRecord(Base):
    """One event waiting for the relay. Removed once the broker acknowledged it.

    `shard` is a stable hash of the key: a relay publishes a shard only while it holds the
    shard's lease, so one key's events always leave through one relay, in id order.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    shard: Mapped[int] = mapped_column(sa.SmallInteger)
    topic: Mapped[str] = mapped_column(sa.String(200))
    message_key: Mapped[str] = mapped_column(sa.String(200))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(sa.String(100))
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))


DEAD_LETTER_STATES = ("open", "replayed", "discarded")


class DeadLetterAction(Base):
    """The audit log: one replay or discard, who ran it, what it selected and which rows it took.

    A replay in batches adds each batch's rows here in that batch's transaction, so an
    interrupted one (finished_at still null) says exactly what it did.
    """

    __tablename__ = "dead_letter_actions"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    action: Mapped[str] = mapped_column(sa.String(16))  # replay or discard
    actor: Mapped[str] = mapped_column(sa.String(200))
    target: Mapped[str | None] = mapped_column(sa.String(16))  # replay: original or retry
    selection: Mapped[dict[str, Any]] = mapped_column(JSONB)  # ids or the filter, as asked
    row_count: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    row_ids: Mapped[list[int]] = mapped_column(ARRAY(sa.BigInteger), server_default="{}")
    started_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class DeadLetter(Base):
    """One record of a dead-letter topic, as the indexer read it: the failed-jobs row."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    dlq_topic: Mapped[str] = mapped_column(sa.String(200))  # catalog name, without namespace
    dlq_partition: Mapped[int] = mapped_column(sa.Integer)
    dlq_offset: Mapped[int] = mapped_column(sa.BigInteger)
    original_topic: Mapped[str] = mapped_column(sa.String(200))
    original_partition: Mapped[int | None] = mapped_column(sa.Integer)
    original_offset: Mapped[int | None] = mapped_column(sa.BigInteger)
    message_key: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    key_text: Mapped[str | None] = mapped_column(sa.String(400))
    payload: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB)
    schema_name: Mapped[str | None] = mapped_column(sa.String(100))  # null: undecodable
    payload_json: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # decoded, for search and views
    event_type: Mapped[str | None] = mapped_column(sa.String(100))
    error_class: Mapped[str] = mapped_column(sa.String(200))
    error_message: Mapped[str] = mapped_column(sa.Text)
    consumer_group: Mapped[str | None] = mapped_column(sa.String(300))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    replay_count: Mapped[int] = mapped_column(sa.Integer)
    trace_id: Mapped[str | None] = mapped_column(sa.String(32))
    first_failed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_failed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    indexed_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))
    state: Mapped[str] = mapped_column(sa.String(16), server_default="open")
    resolved_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(sa.String(200))
    resolved_action_id: Mapped[int | None] = mapped_column(sa.ForeignKey("dead_letter_actions.id"))
    replayed_to: Mapped[str | None] = mapped_column(sa.String(200))

    __table_args__ = (
        sa.UniqueConstraint("dlq_topic", "dlq_partition", "dlq_offset", name="dead_letters_position"),
        sa.CheckConstraint("state IN ('open', 'replayed', 'discarded')", name="dead_letters_state_valid"),
    )


API_ROLES = ("viewer", "operator")


class ApiToken(Base):
    """A token of the ops API. Only its SHA-256 is stored: tokens are 256 random bits, so a
    fast hash is enough, and a stolen table yields no token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, sa.Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    token_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


HISTORY_KINDS = ("requested", "replayed", "sent", "retry_scheduled", "dead_lettered", "failed")


class NotificationHistoryEntry(Base):
    """One moment of a notification's story, as the history indexer read it: its request (or a
    replay of it) on its channel's topic, or an outcome on `notifications.status`."""

    __tablename__ = "notification_history"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    source_topic: Mapped[str] = mapped_column(sa.String(200))  # catalog name, without namespace
    source_partition: Mapped[int] = mapped_column(sa.Integer)
    source_offset: Mapped[int] = mapped_column(sa.BigInteger)
    notification_id: Mapped[str] = mapped_column(sa.String(200), index=True)
    subject_id: Mapped[str] = mapped_column(sa.String(400), index=True)  # the triggering event's key
    notification_type: Mapped[str] = mapped_column(sa.String(100))
    channel: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(20))
    recipient: Mapped[str | None] = mapped_column(sa.String(400), index=True)  # requests only
    event_type: Mapped[str | None] = mapped_column(sa.String(100))
    event_fields: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the request's parameters
    attempts: Mapped[int | None] = mapped_column(sa.Integer)
    error_class: Mapped[str | None] = mapped_column(sa.String(200))
    error: Mapped[str | None] = mapped_column(sa.Text)
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(200))
    gateway_instance: Mapped[str | None] = mapped_column(sa.String(200))
    due_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    trace_id: Mapped[str | None] = mapped_column(sa.String(32))
    occurred_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    indexed_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))

    __table_args__ = (
        sa.UniqueConstraint("source_topic", "source_partition", "source_offset",
                            name="notification_history_position"),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in HISTORY_KINDS)})",
                           name="notification_history_kind_valid"),
    )
