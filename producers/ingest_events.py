"""What upstream services may post to `POST /v1/events`, and how a body becomes a DomainEvent.

A body is `{"type": "<kind>.<what>", "data": {...}}`: `data` is the event's Avro record as
JSON (timestamps as ISO 8601 or epoch milliseconds; `event_id` optional). Pure: no I/O.

Checked at the door, beyond the Avro schema, so nothing fails later in the database or at a
provider: the limits the schema declares on a field (`maxLength`, `pattern`), no control
characters in any text, the key within the outbox's column, and timestamps from 1970 to a
day ahead. Every error names the field and the rule, never the value: bodies carry
personal data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson

from herald.producers.outbox import MAX_KEY_LENGTH, DomainEvent
from herald.schemas.catalog import SESSION_EVENTS
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import SchemaViolation, schema_json, shown_name, validate_record
from herald.schemas.event_json import is_timestamp
from herald.schemas.event_schemas import event_schema_name
from herald.schemas.json_schema import record_json_schema


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


# The gateway channel's sessions: Herald's own kind, beside the catalog's.
SESSION_KIND = EventKind(
    "herald.SessionEvent", SESSION_EVENTS, "session_id",
    ("session.opened", "session.updated", "session.reassigned", "session.qr_pending",
     "session.connected", "session.disconnected"))


def event_kinds(catalog: Catalog) -> dict[str, EventKind]:
    """What POST /v1/events accepts: the catalog's event kinds, and the gateway sessions'
    when a channel is a whatsapp-gateway."""
    kinds = {kind: EventKind(event_schema_name(catalog, kind), catalog.topic_of(kind), spec.key, spec.types,
                             spec.type_field) for kind, spec in catalog.events.items()}
    if catalog.channels_of_kind("whatsapp-gateway"):
        kinds["session"] = SESSION_KIND
    return kinds

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_TYPE = re.compile(r"^[a-z_]{1,32}\.[a-z_]{1,32}$")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=1)  # a writer's clock may run ahead; more is a bug, not an event


@dataclass(frozen=True)
class FieldRule:
    """What the schema declares about one field beyond its Avro type."""

    name: str
    max_length: int | None
    pattern: re.Pattern[str] | None


def request_bodies(kinds: dict[str, EventKind]) -> dict[str, Any]:
    """The OpenAPI request body of POST /v1/events: one alternative per accepted event type."""
    alternatives = []
    for kind in kinds.values():
        data = record_json_schema(schema_json(kind.schema_name))
        for event_type in kind.types:
            properties = {"type": {"type": "string", "enum": [event_type]}, "data": data}
            alternatives.append({"title": event_type, "type": "object", "required": ["type", "data"],
                                 "additionalProperties": False, "properties": properties})
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": alternatives}}}}


def parse_event(body: bytes, kinds: dict[str, EventKind], correlation_id: str, traceparent: str | None,
                now: datetime | None = None) -> DomainEvent:
    """The DomainEvent a request body describes; InvalidEvent naming the field otherwise."""
    try:
        document = orjson.loads(body)  # bounded nesting (1,024 levels); no lone surrogates
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent("invalid_event", "the body must be a JSON object")
    unknown = sorted(shown_name(name) for name in set(document) - {"type", "data"})
    if unknown:
        raise InvalidEvent("invalid_event", f"unknown top-level field(s) {', '.join(unknown)}; only type and "
                           "data are accepted", unknown[0])
    event_type, data = document.get("type"), document.get("data")
    kind = _kind_of(kinds, event_type)
    if not isinstance(data, dict):
        raise InvalidEvent("invalid_event", "`data` must be a JSON object", "data")
    record = _record(kind, data, now or datetime.now(UTC))
    _check_type_matches(kind, str(event_type), record)
    return DomainEvent(topic=kind.topic, key=record[kind.key_field], schema_name=kind.schema_name,
                       event_type=str(event_type), record=record, correlation_id=correlation_id,
                       traceparent=traceparent)


def _kind_of(kinds: dict[str, EventKind], event_type: Any) -> EventKind:
    if not isinstance(event_type, str):
        example = next(iter(kinds.values())).types[0]
        raise InvalidEvent("invalid_event", f'type is required, e.g. "{example}"', "type")
    kind = kinds.get(event_type.split(".", 1)[0])
    if kind is None or event_type not in kind.types:
        accepted = ", ".join(t for k in kinds.values() for t in k.types)
        shown = f" {event_type!r}" if _SHOWN_TYPE.match(event_type) else ""
        raise InvalidEvent("unknown_type", f"unknown event type{shown}; accepted: {accepted}", "type")
    return kind


def _record(kind: EventKind, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    record = dict(data)
    record.setdefault("event_id", str(uuid.uuid4()))
    for name in _timestamp_fields(kind.schema_name):
        if name in record:
            record[name] = _timestamp(record[name], f"data.{name}", now)
    if not isinstance(record["event_id"], str) or not _is_uuid(record["event_id"]):
        raise InvalidEvent("schema_violation", "data.event_id must be a UUID", "data.event_id")
    try:
        validate_record(kind.schema_name, record)
    except SchemaViolation as exc:
        field = f"data.{exc.fields[0]}" if exc.fields else "data"
        raise InvalidEvent("schema_violation", "; ".join(f"data.{p}" for p in exc.problems), field) from None
    _check_declared_rules(kind, record)
    return record


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _check_declared_rules(kind: EventKind, record: dict[str, Any]) -> None:
    """The schema's limits, no control characters anywhere, the key within the outbox column."""
    for rule in _field_rules(kind.schema_name):
        field = f"data.{rule.name}"
        for text in _texts(record.get(rule.name)):
            if _CONTROL_CHARACTERS.search(text):
                raise InvalidEvent("schema_violation", f"{field} contains a control character", field)
            if rule.max_length is not None and len(text) > rule.max_length:
                raise InvalidEvent("schema_violation", f"{field} is longer than {rule.max_length} characters",
                                   field)
            if rule.pattern is not None and not rule.pattern.match(text):
                raise InvalidEvent("schema_violation", f"{field} must match {rule.pattern.pattern}", field)
    if len(record[kind.key_field]) > MAX_KEY_LENGTH:
        field = f"data.{kind.key_field}"
        raise InvalidEvent("schema_violation", f"{field} is longer than {MAX_KEY_LENGTH} characters", field)


@cache
def _timestamp_fields(schema_name: str) -> tuple[str, ...]:
    """The fields a body may give as ISO 8601 or epoch milliseconds."""
    return tuple(f["name"] for f in schema_json(schema_name)["fields"] if is_timestamp(f["type"]))


@cache
def _field_rules(schema_name: str) -> tuple[FieldRule, ...]:
    return tuple(FieldRule(f["name"], f.get("maxLength"), re.compile(f["pattern"]) if "pattern" in f
                           else None) for f in schema_json(schema_name)["fields"])


def _texts(value: Any) -> Iterator[str]:
    """The strings of a field's value: itself, or a map's keys and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _texts(item)


def _timestamp(value: Any, field: str, now: datetime) -> datetime:
    rule = f"{field} must be ISO 8601 with a UTC offset or epoch milliseconds"
    if isinstance(value, int) and not isinstance(value, bool):
        if not EARLIEST.timestamp() * 1000 <= value <= (now + AHEAD).timestamp() * 1000:
            raise InvalidEvent("schema_violation", f"{field} must lie between 1970 and a day from now", field)
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                raise InvalidEvent("schema_violation", f"{rule}; this one has no offset", field)
            if not EARLIEST <= parsed <= now + AHEAD:
                raise InvalidEvent("schema_violation", f"{field} must lie between 1970 and a day from now",
                                   field)
            return parsed
    raise InvalidEvent("schema_violation", rule, field)


def _check_type_matches(kind: EventKind, event_type: str, record: dict[str, Any]) -> None:
    if kind.status_field is None:
        return
    expected = event_type.split(".", 1)[1]
    if record[kind.status_field] != expected:
        field = f"data.{kind.status_field}"
        raise InvalidEvent("schema_violation",
                           f"{field} is {record[kind.status_field]!r} but type says {expected!r}", field)
