"""`emit()`: add an event to the outbox inside the caller's transaction; `emit_encoded()` for a
record that was encoded before (a dead letter replayed); the backlog view.

The event is validated and encoded before anything is added, so an invalid event raises
SchemaViolation naming the field and the caller's transaction can roll back cleanly.

The caller's transaction is an ORM `Session` or a Core `Connection`. In a Session the row is an
ORM object, flushed with the caller's own objects: many events in one transaction go in one
statement. On a Connection it is inserted at once, without the unit of work, which costs most
of a small transaction's CPU (see docs/upstream.md).
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
# Built once: a statement made per call would be compiled-cache-keyed per call.
_INSERT_ROW = sa.insert(OutboxRecord.__table__)


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


def emit(transaction: Session | sa.Connection, event: DomainEvent) -> uuid.UUID:
    """Add `event` to the outbox in the caller's open transaction; its event id."""
    payload = encode(event.schema_name, event.record)
    event_id = str(event.record.get("event_id") or uuid.uuid4())
    headers = event_headers(event_id=event_id, event_type=event.event_type,
                            correlation_id=event.correlation_id, traceparent=event.traceparent)
    values = outbox_values(event.topic, event.key, uuid.UUID(event_id), event.event_type, payload, headers)
    if isinstance(transaction, sa.Connection):
        transaction.execute(_INSERT_ROW, values)
    else:
        transaction.add(OutboxRecord(**values))
    return values["event_id"]


def outbox_values(topic: str, key: str, event_id: uuid.UUID, event_type: str, payload: bytes,
                  headers: dict[str, str]) -> dict[str, Any]:
    """An outbox row's columns (all but the id and the time, which the database gives)."""
    return {"topic": topic, "message_key": key, "shard": shard_of(key), "event_id": event_id,
            "event_type": event_type, "payload": payload, "headers": headers}


def emit_encoded(session: Session, topic: str, key: str, payload: bytes,
                 headers: dict[str, str]) -> OutboxRecord:
    """Add a record exactly as it was once encoded, bytes and headers unchanged: the payload was
    validated when first emitted, and a replay must deliver what the original would have.
    Keeps the record's event id when it carries a valid one, so consumers can still drop repeats."""
    row = OutboxRecord(**outbox_values(topic, key, _uuid_or_new(headers.get(EVENT_ID)),
                                       headers.get(EVENT_TYPE) or "dead_letter.replayed", payload, headers))
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
