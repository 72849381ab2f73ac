"""What every Faust processor here shares: raw-bytes topics, the send callable, and dead letters
for undecodable input.

Each input topic has one processor that dead-letters what it cannot decode (the first reader
in the dataflow: the router for registrations.events, the status counter for
notifications.status, the session reconciler for sessions.events and gateway.observations);
other readers of the topic skip such a record with a log line, so one bad record makes one
dead letter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.headers import from_kafka
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter

log = logging.getLogger(__name__)

# Every Herald topic carries our own bytes (Confluent-framed Avro): Faust passes them through.
RAW_BYTES = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
RECHECK_AFTER_MS = 5000  # a check asked of a key's owner and not yet handled is asked again
Send = Callable[[OutgoingRecord], Awaitable[None]]


def header_pairs(headers: object) -> list[tuple[str, bytes]]:
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers or [])  # type: ignore[call-overload]


async def decoded_or_dead_letter(event: faust.EventT, catalog_topic: str, schema_name: str, send: Send,
                                 stage: str) -> dict[str, Any] | None:
    """The record, or None once it went to the topic's DLQ with its reason (never blocking)."""
    try:
        return decode_expecting(event.value, schema_name)
    except UndecodableRecord as exc:
        message = event.message
        log.error("%s dead-letters %s[%d]@%d: %s", stage, message.topic, message.partition,
                  message.offset, exc)
        timestamp_ms = int(message.timestamp * 1000) if message.timestamp else None
        source = SourceRecord(catalog_topic, message.partition, message.offset, event.key, event.value,
                              from_kafka(header_pairs(event.headers)), timestamp_ms)
        await send(dead_letter(source, "UndecodableRecord", str(exc), consumer_group=stage))
        return None
