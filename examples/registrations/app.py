"""The registrations example's domain app (seed 000): each status change writes its row and
its event in one transaction, through Herald's outbox.

The table is the app's own, never Herald's: `create_tables` makes it (Herald's migrations
make only Herald's tables). The app speaks SQLAlchemy Core, in the caller's transaction: a
`Connection` (what the demo's writers use: the cheapest) or an ORM `Session`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from herald.producers.outbox import DomainEvent, emit

TOPIC = "registrations.events"  # as catalog.yaml declares
SCHEMA = "herald.RegistrationEvent"
# status -> the status it may move to next.
NEXT_STATUS = {"created": "payment_uploaded", "payment_uploaded": "payment_verified"}
PREVIOUS_STATUS = {after: before for before, after in NEXT_STATUS.items()}


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


REGISTRATIONS = Registration.__table__
_INSERT = sa.insert(REGISTRATIONS)
# One statement takes the row lock, checks the transition and reads what the event carries:
# concurrent changes of one registration serialise on it, so its events keep their order.
_ADVANCE = (sa.update(REGISTRATIONS)
            .where(REGISTRATIONS.c.id == sa.bindparam("registration_id"),
                   REGISTRATIONS.c.status == sa.bindparam("previous"))
            .values(status=sa.bindparam("new_status"), status_changed_at=sa.bindparam("now"))
            .returning(REGISTRATIONS.c.participant_name, REGISTRATIONS.c.phone, REGISTRATIONS.c.email,
                       REGISTRATIONS.c.workspace_id))
_STATUS = sa.select(REGISTRATIONS.c.status).where(REGISTRATIONS.c.id == sa.bindparam("registration_id"))

Transaction = Session | sa.Connection


@dataclass(frozen=True)
class RegistrationState:
    """A registration as one of its changes left it: what its event carries."""

    id: str
    participant_name: str
    phone: str
    email: str
    workspace_id: str
    status: str
    status_changed_at: datetime


def create_tables(engine: sa.Engine) -> None:
    """The app's table, unless it is there (databases Herald migrated before 0.2 have it)."""
    Base.metadata.create_all(engine, checkfirst=True)


class InvalidTransition(ValueError):
    """A status change the registration lifecycle does not allow."""


class UnknownRegistration(LookupError):
    pass


def register(
    transaction: Transaction, *, registration_id: str, participant_name: str, phone: str, email: str,
    workspace_id: str = "default", correlation_id: str | None = None,
) -> RegistrationState:
    now = datetime.now(UTC)
    registration = RegistrationState(registration_id, participant_name, phone, email, workspace_id,
                                     "created", now)
    transaction.execute(_INSERT, {"id": registration_id, "participant_name": participant_name,
                                  "phone": phone, "email": email, "workspace_id": workspace_id,
                                  "status": "created", "created_at": now, "status_changed_at": now})
    emit(transaction, registration_event(registration, correlation_id))
    return registration


def change_status(
    transaction: Transaction, registration_id: str, new_status: str, correlation_id: str | None = None,
) -> RegistrationState:
    now = datetime.now(UTC)
    row = transaction.execute(_ADVANCE, {
        "registration_id": registration_id, "previous": PREVIOUS_STATUS.get(new_status),
        "new_status": new_status, "now": now}).one_or_none()
    if row is None:
        raise _refusal(transaction, registration_id, new_status)
    registration = RegistrationState(registration_id, *row, new_status, now)
    emit(transaction, registration_event(registration, correlation_id))
    return registration


def registration_status(transaction: Transaction, registration_id: str) -> str | None:
    """The registration's status now, None when there is no such registration."""
    return transaction.execute(_STATUS, {"registration_id": registration_id}).scalar_one_or_none()


def _refusal(transaction: Transaction, registration_id: str, new_status: str) -> Exception:
    """Why a change updated no row: no such registration, or not the status it moves from."""
    status = registration_status(transaction, registration_id)
    if status is None:
        return UnknownRegistration(f"no registration {registration_id!r}")
    return InvalidTransition(
        f"registration {registration_id}: cannot go from {status!r} to {new_status!r} "
        f"(allowed next: {NEXT_STATUS.get(status)!r})")


def registration_event(registration: RegistrationState, correlation_id: str | None) -> DomainEvent:
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
