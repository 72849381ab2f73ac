"""Tables: the registration domain and the outbox its changes are written to."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

REGISTRATION_STATUSES = ("created", "payment_uploaded", "payment_verified")


class Base(DeclarativeBase):
    pass


class Registration(Base):
    __tablename__ = "registrations"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    participant_name: Mapped[str] = mapped_column(sa.String(200))
    phone: Mapped[str] = mapped_column(sa.String(32))
    email: Mapped[str] = mapped_column(sa.String(320))
    status: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    status_changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('created', 'payment_uploaded', 'payment_verified')",
            name="registrations_status_valid"),
    )


class OutboxRecord(Base):
    """One event waiting for the relay. Removed once the broker acknowledged it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    topic: Mapped[str] = mapped_column(sa.String(200))
    message_key: Mapped[str] = mapped_column(sa.String(200))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    event_type: Mapped[str] = mapped_column(sa.String(100))
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"))
