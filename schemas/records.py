"""Record shapes shared by every stage; the retry and dead-letter records built from a failed input.

Both keep the input's key, value and headers as they came, and add why and where it failed.
A record retried from a tier still names where it first failed (original-*), so its dead
letter points at the request as it first arrived, whatever tier it died on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

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
    timestamp_ms: int | None = None  # the broker's or producer's timestamp, when known


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str  # catalog name, without namespace
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Failure:
    """One failed attempt at a record: what went wrong, when, and after how many attempts."""

    error_class: str
    error_message: str
    attempts: int  # attempts made so far, this one included (0: it was never attempted)
    at: datetime


def origin_headers(source: SourceRecord, failed_at: datetime) -> dict[str, str]:
    """Where a record first failed: kept from an earlier failure, else this record itself."""
    if h.ORIGINAL_TOPIC in source.headers:
        names = (h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET, h.ORIGINAL_TIMESTAMP,
                 h.FIRST_FAILED_AT)
        return {name: source.headers[name] for name in names if name in source.headers}
    return {
        h.ORIGINAL_TOPIC: source.topic,
        h.ORIGINAL_PARTITION: str(source.partition),
        h.ORIGINAL_OFFSET: str(source.offset),
        h.ORIGINAL_TIMESTAMP: str(source.timestamp_ms if source.timestamp_ms is not None else -1),
        h.FIRST_FAILED_AT: h.iso(failed_at),
    }


def retry_record(source: SourceRecord, tier_topic: str, failure: Failure, due_at: datetime,
                 delay_s: float) -> OutgoingRecord:
    """The input, unchanged, on a retry tier, due at `due_at`."""
    headers = {
        **source.headers,
        **origin_headers(source, failure.at),
        h.ATTEMPT: str(failure.attempts),
        h.DUE_AT: h.iso(due_at),
        h.RETRY_DELAY_MS: str(round(delay_s * 1000)),
        h.ERROR_CLASS: failure.error_class,
        h.ERROR_MESSAGE: failure.error_message,
    }
    return OutgoingRecord(tier_topic, source.key, source.value, headers)


def dead_letter(source: SourceRecord, error_class: str, error_message: str, *,
                consumer_group: str = "", attempts: int = 0,
                failed_at: datetime | None = None) -> OutgoingRecord:
    """The input as it came (key, value, headers kept), self-describing: why, where, who, how often."""
    failed_at = failed_at or datetime.now(UTC)
    origin = origin_headers(source, failed_at)
    headers = {
        **source.headers,
        **origin,
        h.ERROR_CLASS: error_class,
        h.ERROR_MESSAGE: error_message,
        h.CONSUMER_GROUP: consumer_group,
        h.ATTEMPTS: str(attempts),
        h.TRACE_ID: h.trace_id_of(source.headers.get(h.TRACEPARENT)) or "",
        h.REPLAY_COUNT: source.headers.get(h.REPLAY_COUNT, "0"),
    }
    headers.pop(h.DUE_AT, None)  # a dead letter is due never; replay sets its own
    return OutgoingRecord(dead_letter_topic(origin[h.ORIGINAL_TOPIC]), source.key, source.value, headers)


def derived_headers(source_headers: Mapping[str, str], event_id: str, event_type: str,
                    produced_at: str | None = None, traceparent: str | None = None) -> dict[str, str]:
    """Headers of a record derived from another: same correlation and trace, new span (or
    `traceparent`, the span that derived it, while tracing). `produced_at` (ISO text, now if
    not given) lets a batch share one reading of the clock."""
    return {
        h.EVENT_ID: event_id,
        h.EVENT_TYPE: event_type,
        h.CORRELATION_ID: source_headers.get(h.CORRELATION_ID, event_id),
        h.TRACEPARENT: traceparent or h.new_traceparent(h.trace_id_of(source_headers.get(h.TRACEPARENT))),
        h.PRODUCED_AT: produced_at or h.utc_now_iso(),
    }
