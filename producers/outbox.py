"""`emit()`: add an event to the outbox inside the caller's transaction; `emit_encoded()` for a
record that was encoded before (a dead letter replayed); the backlog view.

The event is validated and encoded before anything is added, so an invalid event raises
SchemaViolation naming the field and the caller's transaction can roll back cleanly.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.schemas.codec import encode
from herald.schemas.headers import EVENT_ID, EVENT_TYPE, event_headers
from herald.schemas.tables import OutboxRecord

# Fixed for the table's life: rows are routed to relays by it. Changing it needs an empty
# outbox (stop writers, let relays drain) and a migration.
OUTBOX_SHARDS = 32
MAX_KEY_LENGTH: int = OutboxRecord.__table__.c.message_key.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DomainEvent:
    topic: str  # catalog name, without namespace
    key: str  # aggregate id: order is kept per key
    schema_name: str
    event_type: str
    record: dict[str, Any]
    correlation_id: str | None = None
    traceparent: str | None = None


def shard_of(key: str) -> int:
    """The outbox shard of an aggregate key (stable across processes and versions)."""
    return zlib.crc32(key.encode("utf-8")) % OUTBOX_SHARDS


def emit(session: Session, event: DomainEvent) -> OutboxRecord:
    payload = encode(event.schema_name, event.record)
    event_id = str(event.record.get("event_id") or uuid.uuid4())
    headers = event_headers(event_id=event_id, event_type=event.event_type,
                            correlation_id=event.correlation_id, traceparent=event.traceparent)
    row = OutboxRecord(topic=event.topic, message_key=event.key, shard=shard_of(event.key),
                       event_id=uuid.UUID(event_id), event_type=event.event_type,
                       payload=payload, headers=headers)
    session.add(row)
    return row


def emit_encoded(session: Session, topic: str, key: str, payload: bytes,
                 headers: dict[str, str]) -> OutboxRecord:
    """Add a record exactly as it was once encoded, bytes and headers unchanged: the payload was
    validated when first emitted, and a replay must deliver what the original would have.
    Keeps the record's event id when it carries a valid one, so consumers can still drop repeats."""
    row = OutboxRecord(topic=topic, message_key=key, shard=shard_of(key),
                       event_id=_uuid_or_new(headers.get(EVENT_ID)),
                       event_type=headers.get(EVENT_TYPE) or "dead_letter.replayed",
                       payload=payload, headers=headers)
    session.add(row)
    return row


def _uuid_or_new(raw: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(raw or "")
    except ValueError:
        return uuid.uuid4()


@dataclass(frozen=True)
class Backlog:
    rows: int
    oldest_age_s: float  # 0 when empty

    def as_dict(self) -> dict[str, float]:
        return {"rows": self.rows, "oldest_age_s": round(self.oldest_age_s, 3)}


def outbox_backlog(conn: sa.Connection) -> Backlog:
    """Rows waiting for a relay and the age of the oldest, for health views and metrics."""
    rows, oldest = conn.execute(sa.text(
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - "
        "(SELECT created_at FROM outbox ORDER BY id LIMIT 1)), 0) FROM outbox")).one()
    return Backlog(rows=int(rows), oldest_age_s=float(oldest))
