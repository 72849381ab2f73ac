"""Messaging (WhatsApp gateway) sessions: each change writes its row and its event in one transaction.

Every event carries the session's whole state, so the latest record per key on the
compacted `sessions.events` topic is the session as the database declares it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from herald.producers.outbox import DomainEvent, emit
from herald.schemas.catalog import SESSION_EVENTS
from herald.schemas.tables import SESSION_STATUSES, MessagingSession

_UNCHANGED = object()


class UnknownSession(LookupError):
    pass


class InvalidSessionStatus(ValueError):
    pass


def open_session(
    session: Session, *, session_id: str, workspace_id: str, phone: str | None = None,
    status: str = "qr_pending", gateway_instance: str | None = None,
    metadata: Mapping[str, str] | None = None, correlation_id: str | None = None,
) -> MessagingSession:
    _check_status(status)
    now = datetime.now(UTC)
    row = MessagingSession(session_id=session_id, workspace_id=workspace_id, phone=phone,
                           status=status, gateway_instance=gateway_instance,
                           metadata_=dict(metadata or {}), created_at=now, updated_at=now)
    session.add(row)
    emit(session, session_event(row, "session.opened", correlation_id))
    return row


def update_session(
    session: Session, session_id: str, *, status: str | None = None,
    gateway_instance: str | object | None = _UNCHANGED, phone: str | object | None = _UNCHANGED,
    metadata: Mapping[str, str] | None = None, correlation_id: str | None = None,
) -> MessagingSession:
    """Apply the given changes (`metadata` is merged in); no change writes no event."""
    if status is not None:
        _check_status(status)
    # Row lock: concurrent changes of one session serialise, so its events keep order.
    row = session.get(MessagingSession, session_id, with_for_update=True)
    if row is None:
        raise UnknownSession(f"no messaging session {session_id!r}")
    event_type = _apply(row, status, gateway_instance, phone, metadata)
    if event_type is not None:
        row.updated_at = datetime.now(UTC)
        emit(session, session_event(row, event_type, correlation_id))
    return row


def _apply(row: MessagingSession, status: str | None, gateway_instance: object, phone: object,
           metadata: Mapping[str, str] | None) -> str | None:
    """Change `row`; the event type names the most telling change, None when nothing changed."""
    changed: list[str] = []
    if metadata and {**row.metadata_, **metadata} != row.metadata_:
        row.metadata_ = {**row.metadata_, **metadata}
        changed.append("session.updated")
    if phone is not _UNCHANGED and phone != row.phone:
        row.phone = phone  # type: ignore[assignment]
        changed.append("session.updated")
    if gateway_instance is not _UNCHANGED and gateway_instance != row.gateway_instance:
        row.gateway_instance = gateway_instance  # type: ignore[assignment]
        changed.append("session.reassigned")
    if status is not None and status != row.status:
        row.status = status
        changed.append(f"session.{status}")
    return changed[-1] if changed else None


def _check_status(status: str) -> None:
    if status not in SESSION_STATUSES:
        raise InvalidSessionStatus(f"session status {status!r} is not one of {', '.join(SESSION_STATUSES)}")


def session_event(row: MessagingSession, event_type: str, correlation_id: str | None) -> DomainEvent:
    record = {
        "event_id": str(uuid.uuid4()),
        "session_id": row.session_id,
        "workspace_id": row.workspace_id,
        "phone": row.phone,
        "status": row.status,
        "gateway_instance": row.gateway_instance,
        "metadata": dict(row.metadata_),
        "occurred_at": row.updated_at,
    }
    return DomainEvent(topic=SESSION_EVENTS, key=row.session_id, schema_name="herald.SessionEvent",
                       event_type=event_type, record=record, correlation_id=correlation_id)
