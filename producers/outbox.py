"""`emit()`: add an event to the outbox inside the caller's transaction.

The event is validated and encoded before anything is added, so an invalid event raises
SchemaViolation naming the field and the caller's transaction can roll back cleanly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from herald.producers.models import OutboxRecord
from herald.schemas.codec import encode
from herald.schemas.headers import event_headers


@dataclass(frozen=True)
class DomainEvent:
    topic: str  # catalog name, without namespace
    key: str  # aggregate id: order is kept per key
    schema_name: str
    event_type: str
    record: dict[str, Any]
    correlation_id: str | None = None
    traceparent: str | None = None


def emit(session: Session, event: DomainEvent) -> OutboxRecord:
    payload = encode(event.schema_name, event.record)
    event_id = str(event.record.get("event_id") or uuid.uuid4())
    headers = event_headers(event_id=event_id, event_type=event.event_type,
                            correlation_id=event.correlation_id, traceparent=event.traceparent)
    row = OutboxRecord(topic=event.topic, message_key=event.key, event_id=uuid.UUID(event_id),
                       event_type=event.event_type, payload=payload, headers=headers)
    session.add(row)
    return row
