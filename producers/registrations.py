"""The registration domain: each status change writes its row and its event in one transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from herald.producers.outbox import DomainEvent, emit
from herald.schemas.catalog import REGISTRATION_EVENTS
from herald.schemas.tables import Registration

# status -> the status it may move to next.
NEXT_STATUS = {"created": "payment_uploaded", "payment_uploaded": "payment_verified"}


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
    return DomainEvent(topic=REGISTRATION_EVENTS, key=registration.id,
                       schema_name="herald.RegistrationEvent",
                       event_type=f"registration.{registration.status}", record=record,
                       correlation_id=correlation_id)
