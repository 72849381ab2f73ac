"""Tables: the registration domain and the outbox its changes are written to."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

REGISTRATION_STATUSES = ("created", "payment_uploaded", "payment_verified")
SESSION_STATUSES = ("qr_pending", "connected", "disconnected")


class Base(DeclarativeBase):
    pass


class Registration(Base):
    __tablename__ = "registrations"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    participant_name: Mapped[str] = mapped_column(sa.String(200))
    phone: Mapped[str] = mapped_column(sa.String(32))
    email: Mapped[str] = mapped_column(sa.String(320))
    workspace_id: Mapped[str] = mapped_column(sa.String(64), server_default="default")
    status: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    status_changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('created', 'payment_uploaded', 'payment_verified')",
            name="registrations_status_valid"),
    )


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
