"""The router's logic without Faust: one input record in, the records to produce out.

Kept pure so it is tested on its own; `streams.app` only moves bytes in and out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from herald.schemas.catalog import notification_topic
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import (
    SchemaViolation,
    UndecodableRecord,
    decode_expecting,
    encode_derived,
    epoch_time_fields,
)
from herald.schemas.event_schemas import event_schema_name
from herald.schemas.headers import utc_now_iso
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter, derived_headers
from herald.streams.rules import event_type_of, notification_fields, notification_requests

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UnknownEventType(ValueError):
    """An event whose type is none its kind declares: dead-lettered, never guessed at."""


class Router:
    """Routes each event topic's records by the catalog's rules."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        # topic -> (kind, its schema's name), looked up once, not per record
        self._kinds: Mapping[str, tuple[str, str]] = {
            catalog.topic_of(kind): (kind, event_schema_name(catalog, kind)) for kind in catalog.events}
        # Events are read with their timestamps as numbers (no datetime per value); these
        # fields are made datetimes again, the rest go into requests as the numbers they were.
        self._dated: Mapping[str, tuple[tuple[str, int], ...]] = {
            kind: _timestamps_read_as_values(catalog, kind, schema) for kind, schema in self._kinds.values()}
        self._epoch_requests = frozenset(kind for kind, dated in self._dated.items()
                                         if catalog.events[kind].time_field not in dict(dated))

    def route(self, source: SourceRecord, produced_at: str | None = None,
              traceparent: str | None = None) -> list[OutgoingRecord]:
        """The records `source` calls for; `produced_at` (ISO text) is the batch's clock reading,
        `traceparent` the span that routes it, while tracing."""
        try:
            kind, schema_name = self._kinds[source.topic]
            event = _dated_again(decode_expecting(source.value, schema_name, epoch_times=True),
                                 self._dated[kind])
            event_type = event_type_of(self._catalog, kind, event, source.headers)
            if event_type is None:
                raise UnknownEventType(f"the event-type header names no type of {kind}, and neither "
                                       "does its type field")
            requests = notification_requests(self._catalog, kind, event_type, event)
            produced_at = produced_at or utc_now_iso()
            # The time field made a datetime (a template reads it too) is written as one.
            epoch = kind in self._epoch_requests
            return [_request_record(source, request, produced_at, epoch, traceparent) for request in requests]
        except (UndecodableRecord, SchemaViolation, UnknownEventType) as exc:
            return [dead_letter(source, type(exc).__name__, str(exc))]
        except Exception as exc:
            # A bug must not crash-loop the agent on one record (its offset would never advance):
            # the record goes to the DLQ with the error, loudly, and the partition moves on.
            log.exception("router failed on %s[%d]@%d", source.topic, source.partition, source.offset)
            return [dead_letter(source, type(exc).__name__, f"unexpected router error: {exc!r}")]


def _dated_again(event: dict[str, object], fields: tuple[tuple[str, int], ...]) -> dict[str, object]:
    """`fields` (name, units per second) of an event read with epoch times, as fastavro dates them."""
    for field, per_second in fields:
        if isinstance(value := event.get(field), int):
            event[field] = EPOCH + timedelta(microseconds=value * 1_000_000 // per_second)
    return event


def _timestamps_read_as_values(catalog: Catalog, kind: str, schema_name: str) -> tuple[tuple[str, int], ...]:
    """The timestamp fields (name, units per second) the catalog's notifications of `kind` read as
    values: template parameters, guards, recipients and the event's identifying fields. The
    event's time field alone goes into a request as is (`source_occurred_at`, a timestamp too)."""
    spec = catalog.events[kind]
    read = {field for field in (spec.key, spec.workspace_field, spec.type_field) if field}
    for event_type in spec.types:
        read |= notification_fields(catalog, event_type)
    units = epoch_time_fields(schema_name)
    return tuple((field, units[field]) for field in sorted(read) if field in units)


def _request_record(source: SourceRecord, request: dict[str, object], produced_at: str,
                    epoch_times: bool, traceparent: str | None) -> OutgoingRecord:
    notification = str(request["notification_id"])
    headers = derived_headers(
        source.headers, derived_event_id(str(request["source_event_id"]), notification),
        f"notification.{request['notification_type']}.requested", produced_at, traceparent)
    return OutgoingRecord(notification_topic(str(request["channel"])), notification.encode(),
                          encode_derived("herald.NotificationRequest", request, epoch_times), headers)
