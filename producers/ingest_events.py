"""What upstream services may post to `POST /v1/events`, and how a body becomes a DomainEvent.

A body is `{"type": "<kind>.<what>", "data": {...}}`: `data` is the event's Avro record as
JSON (timestamps as ISO 8601 or epoch milliseconds; `event_id` optional). Pure: no I/O.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from herald.producers.outbox import DomainEvent
from herald.schemas.catalog import REGISTRATION_EVENTS, SESSION_EVENTS
from herald.schemas.codec import SchemaViolation, validate_record


class InvalidEvent(ValueError):
    """The body is not an event Herald accepts; `field` names where (dotted path), if known."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True)
class EventKind:
    schema_name: str
    topic: str
    key_field: str
    types: tuple[str, ...]  # the accepted `type` values
    status_field: str | None = None  # when set, `type` must be "<kind>.<that field's value>"


EVENT_KINDS: dict[str, EventKind] = {
    "registration": EventKind(
        "herald.RegistrationEvent", REGISTRATION_EVENTS, "registration_id",
        ("registration.created", "registration.payment_uploaded", "registration.payment_verified"),
        status_field="status"),
    "session": EventKind(
        "herald.SessionEvent", SESSION_EVENTS, "session_id",
        ("session.opened", "session.updated", "session.reassigned", "session.qr_pending",
         "session.connected", "session.disconnected")),
}
_TIMESTAMP_FIELDS = ("occurred_at",)


def parse_event(body: bytes, correlation_id: str, traceparent: str | None) -> DomainEvent:
    """The DomainEvent a request body describes; InvalidEvent naming the field otherwise."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent("invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("invalid_event", "the body must be a JSON object")
    unknown = sorted(set(document) - {"type", "data"})
    if unknown:
        raise InvalidEvent("invalid_event", f"unknown top-level field(s): {', '.join(unknown)}", unknown[0])
    event_type, data = document.get("type"), document.get("data")
    kind = _kind_of(event_type)
    if not isinstance(data, dict):
        raise InvalidEvent("invalid_event", "`data` must be a JSON object", "data")
    record = _record(kind, data)
    _check_type_matches(kind, str(event_type), record)
    return DomainEvent(topic=kind.topic, key=record[kind.key_field], schema_name=kind.schema_name,
                       event_type=str(event_type), record=record, correlation_id=correlation_id,
                       traceparent=traceparent)


def _kind_of(event_type: Any) -> EventKind:
    if not isinstance(event_type, str):
        raise InvalidEvent("invalid_event", 'type is required, e.g. "registration.payment_verified"',
                           "type")
    kind = EVENT_KINDS.get(event_type.split(".", 1)[0])
    if kind is None or event_type not in kind.types:
        accepted = ", ".join(t for k in EVENT_KINDS.values() for t in k.types)
        raise InvalidEvent("unknown_type", f"unknown event type {event_type!r}; accepted: {accepted}", "type")
    return kind


def _record(kind: EventKind, data: dict[str, Any]) -> dict[str, Any]:
    record = dict(data)
    record.setdefault("event_id", str(uuid.uuid4()))
    for name in _TIMESTAMP_FIELDS:
        if name in record:
            record[name] = _timestamp(record[name], f"data.{name}")
    try:
        uuid.UUID(str(record["event_id"]))
    except ValueError:
        raise InvalidEvent("schema_violation", "data.event_id must be a UUID", "data.event_id") from None
    try:
        validate_record(kind.schema_name, record)
    except SchemaViolation as exc:
        field = f"data.{exc.fields[0]}" if exc.fields else "data"
        raise InvalidEvent("schema_violation", f"{field}: {exc}", field) from None
    return record


def _timestamp(value: Any, field: str) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    raise InvalidEvent("schema_violation",
                       f"{field} must be ISO 8601 with a UTC offset or epoch milliseconds, got {value!r}",
                       field)


def _check_type_matches(kind: EventKind, event_type: str, record: dict[str, Any]) -> None:
    if kind.status_field is None:
        return
    expected = event_type.split(".", 1)[1]
    if record[kind.status_field] != expected:
        field = f"data.{kind.status_field}"
        raise InvalidEvent("schema_violation",
                           f"{field} is {record[kind.status_field]!r} but type says {expected!r}", field)
