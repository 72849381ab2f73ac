"""The router's logic without Faust: one input record in, the records to produce out.

Kept pure so it is tested on its own; `streams.app` only moves bytes in and out.
"""

from __future__ import annotations

import logging

from herald.schemas.catalog import notification_topic
from herald.schemas.codec import SchemaViolation, UndecodableRecord, decode_expecting, encode
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter, derived_headers
from herald.streams.rules import notification_requests

log = logging.getLogger(__name__)


def route(source: SourceRecord) -> list[OutgoingRecord]:
    try:
        event = decode_expecting(source.value, "herald.RegistrationEvent")
        return [_request_record(source, request) for request in notification_requests(event)]
    except (UndecodableRecord, SchemaViolation) as exc:
        return [dead_letter(source, type(exc).__name__, str(exc))]
    except Exception as exc:
        # A bug must not crash-loop the agent on one record (its offset would never advance):
        # the record goes to the DLQ with the error, loudly, and the partition moves on.
        log.exception("router failed on %s[%d]@%d", source.topic, source.partition, source.offset)
        return [dead_letter(source, type(exc).__name__, f"unexpected router error: {exc!r}")]


def _request_record(source: SourceRecord, request: dict[str, object]) -> OutgoingRecord:
    notification = str(request["notification_id"])
    headers = derived_headers(
        source.headers, derived_event_id(str(request["source_event_id"]), notification),
        f"notification.{request['notification_type']}.requested")
    return OutgoingRecord(notification_topic(str(request["channel"])), notification.encode(),
                          encode("herald.NotificationRequest", request), headers)
