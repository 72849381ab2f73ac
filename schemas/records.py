"""Record shapes shared by every stage, and the dead-letter record built from a failed input."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from herald.schemas import headers as h
from herald.schemas.catalog import dead_letter_topic


@dataclass(frozen=True)
class SourceRecord:
    topic: str  # catalog name, without namespace
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str  # catalog name, without namespace
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def dead_letter(source: SourceRecord, error_class: str, error_message: str) -> OutgoingRecord:
    """The input as it came (key, value, headers kept) with why and where it failed added."""
    headers = {
        **source.headers,
        h.ERROR_CLASS: error_class,
        h.ERROR_MESSAGE: error_message,
        h.ORIGINAL_TOPIC: source.topic,
        h.ORIGINAL_PARTITION: str(source.partition),
        h.ORIGINAL_OFFSET: str(source.offset),
    }
    return OutgoingRecord(dead_letter_topic(source.topic), source.key, source.value, headers)


def derived_headers(source_headers: Mapping[str, str], event_id: str, event_type: str) -> dict[str, str]:
    """Headers of a record derived from another: same correlation and trace, new span."""
    return {
        h.EVENT_ID: event_id,
        h.EVENT_TYPE: event_type,
        h.CORRELATION_ID: source_headers.get(h.CORRELATION_ID, event_id),
        h.TRACEPARENT: h.new_traceparent(h.trace_id_of(source_headers.get(h.TRACEPARENT))),
        h.PRODUCED_AT: h.utc_now_iso(),
    }
