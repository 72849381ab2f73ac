"""The router's logic without Faust: one input record in, the records to produce out.

Kept pure so it is tested on its own; `streams.app` only moves bytes in and out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from herald.schemas.catalog import notification_topic
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import SchemaViolation, UndecodableRecord, decode_expecting, encode_derived
from herald.schemas.event_schemas import event_schema_name
from herald.schemas.headers import utc_now_iso
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter, derived_headers
from herald.streams.rules import event_type_of, notification_requests

log = logging.getLogger(__name__)


class UnknownEventType(ValueError):
    """An event whose type is none its kind declares: dead-lettered, never guessed at."""


class Router:
    """Routes each event topic's records by the catalog's rules."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        # topic -> (kind, its schema's name), looked up once, not per record
        self._kinds: Mapping[str, tuple[str, str]] = {
            catalog.topic_of(kind): (kind, event_schema_name(catalog, kind)) for kind in catalog.events}

    def route(self, source: SourceRecord, produced_at: str | None = None) -> list[OutgoingRecord]:
        """The records `source` calls for; `produced_at` (ISO text) is the batch's clock reading."""
        try:
            kind, schema_name = self._kinds[source.topic]
            event = decode_expecting(source.value, schema_name)
            event_type = event_type_of(self._catalog, kind, event, source.headers)
            if event_type is None:
                raise UnknownEventType(f"the event-type header names no type of {kind}, and neither "
                                       "does its type field")
            requests = notification_requests(self._catalog, kind, event_type, event)
            produced_at = produced_at or utc_now_iso()
            return [_request_record(source, request, produced_at) for request in requests]
        except (UndecodableRecord, SchemaViolation, UnknownEventType) as exc:
            return [dead_letter(source, type(exc).__name__, str(exc))]
        except Exception as exc:
            # A bug must not crash-loop the agent on one record (its offset would never advance):
            # the record goes to the DLQ with the error, loudly, and the partition moves on.
            log.exception("router failed on %s[%d]@%d", source.topic, source.partition, source.offset)
            return [dead_letter(source, type(exc).__name__, f"unexpected router error: {exc!r}")]


def _request_record(source: SourceRecord, request: dict[str, object], produced_at: str) -> OutgoingRecord:
    notification = str(request["notification_id"])
    headers = derived_headers(
        source.headers, derived_event_id(str(request["source_event_id"]), notification),
        f"notification.{request['notification_type']}.requested", produced_at)
    return OutgoingRecord(notification_topic(str(request["channel"])), notification.encode(),
                          encode_derived("herald.NotificationRequest", request), headers)
