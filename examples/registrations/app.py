"""The registrations example's domain app (seed 000): each status change writes its row and
its event in one transaction, through Herald's outbox.

The table is the app's own, never Herald's: `create_tables` makes it (Herald's migrations
make only Herald's tables).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from herald.producers.outbox import DomainEvent, emit

TOPIC = "registrations.events"  # as catalog.yaml declares
SCHEMA = "herald.RegistrationEvent"
# status -> the status it may move to next.
NEXT_STATUS = {"created": "payment_uploaded", "payment_uploaded": "payment_verified"}


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


def create_tables(engine: sa.Engine) -> None:
    """The app's table, unless it is there (databases Herald migrated before 0.2 have it)."""
    Base.metadata.create_all(engine, checkfirst=True)


class InvalidTransition(ValueError):
    """A status change the registration lifecycle does not allow."""


class UnknownRegistration(LookupError):
    pass


def register(
    session: Session, *, registration_id: str, participant_name: str, phone: str, email: str,
    workspace_id: str = "default", correlation_id: str | None = None,
) -> Registration:
    now = datetime.now(UTC)
    registration = Registration(id=registration_id, participant_name=participant_name,
                                phone=phone, email=email, workspace_id=workspace_id, status="created",
                                created_at=now, status_changed_at=now)
    session.add(registration)
    emit(session, registration_event(registration, correlation_id))
    return registration


def change_status(
    session: Session, registration_id: str, new_status: str, correlation_id: str | None = None,
) -> Registration:
    # Row lock: concurrent changes of one registration serialise, so its events keep order.
    registration = session.get(Registration, registration_id, with_for_update=True)
    if registration is None:
        raise UnknownRegistration(f"no registration {registration_id!r}")
    allowed = NEXT_STATUS.get(registration.status)
    if new_status != allowed:
        raise InvalidTransition(
            f"registration {registration_id}: cannot go from {registration.status!r} to "
            f"{new_status!r} (allowed next: {allowed!r})")
    registration.status = new_status
    registration.status_changed_at = datetime.now(UTC)
    emit(session, registration_event(registration, correlation_id))
    return registration


def registration_event(registration: Registration, correlation_id: str | None) -> DomainEvent:
    record = {
        "event_id": str(uuid.uuid4()),
        "registration_id": registration.id,
        "status": registration.status,
        "participant_name": registration.participant_name,
        "phone": registration.phone,
        "email": registration.email,
        "occurred_at": registration.status_changed_at,
        "workspace_id": registration.workspace_id,
    }
    return DomainEvent(topic=TOPIC, key=registration.id, schema_name=SCHEMA,
                       event_type=f"registration.{registration.status}", record=record,
                       correlation_id=correlation_id)
