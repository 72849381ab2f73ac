"""Record header names (DESIGN.md contracts) and helpers to build and read them."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

EVENT_ID = "event-id"
EVENT_TYPE = "event-type"
CORRELATION_ID = "correlation-id"
TRACEPARENT = "traceparent"
PRODUCED_AT = "produced-at"
ERROR_CLASS = "error-class"
ERROR_MESSAGE = "error-message"
ORIGINAL_TOPIC = "original-topic"
ORIGINAL_PARTITION = "original-partition"
ORIGINAL_OFFSET = "original-offset"
ORIGINAL_TIMESTAMP = "original-timestamp"  # epoch ms of the record where it first failed
# Retry records (a retry tier): attempts so far, when the next is due, how long it waited.
ATTEMPT = "attempt"
DUE_AT = "due-at"  # ISO 8601, UTC, ms
FIRST_FAILED_AT = "first-failed-at"
RETRY_DELAY_MS = "retry-delay-ms"  # decorrelated jitter grows from the previous delay
# Dead letters: who gave up, after how many attempts, how to find the trace, replays so far.
CONSUMER_GROUP = "consumer-group"
ATTEMPTS = "attempts"
TRACE_ID = "trace-id"
REPLAY_COUNT = "replay-count"

def new_traceparent(trace_id: str | None = None) -> str:
    """A W3C traceparent; keeps `trace_id` when continuing a trace, with a fresh span id."""
    # Ids need to be unique, not secret: the PRNG (seeded from the system's randomness, and
    # again in a forked child), not a system call per record. An event that came without a
    # trace starts one: under load, os.urandom was a fifth of the router's samples (py-spy).
    trace = trace_id or f"{random.getrandbits(128) or 1:032x}"
    return f"00-{trace}-{random.getrandbits(64) or 1:016x}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return None


def utc_now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_iso(value: str | None) -> datetime | None:
    """A header timestamp, or None when absent or unreadable (never trusted blindly)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_headers(
    *,
    event_id: str,
    event_type: str,
    correlation_id: str | None = None,
    traceparent: str | None = None,
) -> dict[str, str]:
    """The headers every Herald record carries, as text (stored as JSON in the outbox)."""
    return {
        EVENT_ID: event_id,
        EVENT_TYPE: event_type,
        CORRELATION_ID: correlation_id or str(uuid.uuid4()),
        TRACEPARENT: traceparent or new_traceparent(),
        PRODUCED_AT: utc_now_iso(),
    }


def from_kafka(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as text; undecodable bytes are kept visible rather than dropped."""
    result: dict[str, str] = {}
    for name, value in headers or ():
        result[name] = "" if value is None else value.decode("utf-8", errors="backslashreplace")
    return result
