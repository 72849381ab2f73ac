"""Per-minute counts of notification outcomes, by type, channel and status, counted exactly once.

An outcome is a notification reaching a status: a repeat of it (the same notification and
status again, as an at-least-once router re-routing a request after a restart produces) is
not counted again. `SeenOutcomes` remembers, per notification, the offset of the record
that first reached each status. Three idempotent steps, so Faust's at-least-once processing
never double counts:

0. Per notification, the first record of each status counts; a later one is a repeat.
   The same record read again (a crash before the commit) is not a repeat: step 1 decides.
1. Per input partition of `notifications.status`, a `Partial` per bucket holds the count and
   the last input offset counted, in one table entry (one changelog record). An outcome
   read again after a crash has an offset already counted, and is skipped.
2. Partials are sent (periodically, not per outcome) keyed by bucket; the bucket's owner
   keeps each partition's latest partial count. Partials only grow, so a repeated or
   reordered one changes nothing, and the total is their sum.

A bucket is the outcome's minute by its `occurred_at` (event time). Pure functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from herald.schemas.catalog import STATUS_PARTIALS, STATUS_STATS, stats_key
from herald.schemas.codec import encode
from herald.schemas.headers import iso
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, derived_headers

WINDOW_MS = 60_000


@dataclass(frozen=True)
class Bucket:
    window_start_ms: int
    notification_type: str
    channel: str
    status: str

    @classmethod
    def of(cls, outcome: Mapping[str, Any]) -> Bucket:
        occurred_ms = int(outcome["occurred_at"].timestamp() * 1000)
        return cls(occurred_ms - occurred_ms % WINDOW_MS, outcome["notification_type"], outcome["channel"],
                   outcome["status"])

    @property
    def key(self) -> str:
        return stats_key(iso(_datetime(self.window_start_ms)), self.notification_type, self.channel,
                         self.status)

    def as_json(self) -> dict[str, Any]:
        return {"window_start_ms": self.window_start_ms, "notification_type": self.notification_type,
                "channel": self.channel, "status": self.status}


@dataclass(frozen=True)
class Partial:
    """One input partition's count for one bucket, and the last input offset it counted."""

    count: int
    offset: int


@dataclass(frozen=True)
class PartitionCount:
    """The counter's table entry: one input partition's partial for one bucket."""

    bucket: Bucket
    partition: int
    partial: Partial

    def as_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket.as_json(), "partition": self.partition, "count": self.partial.count,
                "offset": self.partial.offset}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionCount:
        return cls(Bucket(**data["bucket"]), data["partition"], Partial(data["count"], data["offset"]))


@dataclass(frozen=True)
class BucketTotal:
    """The totals' table entry: each input partition's latest partial count for one bucket."""

    bucket: Bucket
    table_partition: int  # where the entry lives (the partials topic's partition)
    counts: Mapping[int, int]

    def as_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket.as_json(), "table_partition": self.table_partition,
                "counts": {str(p): c for p, c in self.counts.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BucketTotal:
        return cls(Bucket(**data["bucket"]), data["table_partition"],
                   {int(p): c for p, c in data["counts"].items()})


@dataclass(frozen=True)
class SeenOutcomes:
    """The dedupe table's entry: per status, the input offset of the first record reaching it."""

    partition: int  # the input partition (all of a notification's records are in one)
    first_seen_ms: int  # forgotten with the buckets, this long after
    offsets: Mapping[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "first_seen_ms": self.first_seen_ms,
                "offsets": dict(self.offsets)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeenOutcomes:
        return cls(data["partition"], data["first_seen_ms"], data["offsets"])


def first_occurrence(seen: SeenOutcomes | None, status: str, partition: int, offset: int,
                     now_ms: int) -> tuple[bool, SeenOutcomes | None]:
    """(whether the record at `offset` may count, the entry to store or None when unchanged)."""
    if seen is None:
        return True, SeenOutcomes(partition, now_ms, {status: offset})
    first = seen.offsets.get(status)
    if first is None:
        return True, SeenOutcomes(partition, seen.first_seen_ms, {**seen.offsets, status: offset})
    return first == offset, None


def count_once(partial: Partial | None, offset: int) -> Partial | None:
    """The partial with the outcome at `offset` counted; None when it was counted already."""
    if partial is not None and offset <= partial.offset:
        return None
    return Partial((partial.count if partial else 0) + 1, offset)


def merge_partial(counts: Mapping[int, int], partition: int, count: int) -> dict[int, int] | None:
    """Each partition's latest count with this partial; None when it adds nothing (a repeat)."""
    if counts.get(partition, -1) >= count:
        return None
    return {**counts, partition: count}


def partial_record(bucket: Bucket, partition: int, partial: Partial) -> OutgoingRecord:
    value = orjson.dumps({"bucket": bucket.as_json(), "partition": partition, "count": partial.count})
    return OutgoingRecord(STATUS_PARTIALS, bucket.key.encode(), value, {})


def read_partial(value: bytes) -> tuple[Bucket, int, int]:
    """(bucket, input partition, count) of a partial record; ValueError when malformed."""
    try:
        data = orjson.loads(value)
        return Bucket(**data["bucket"]), int(data["partition"]), int(data["count"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed status partial: {exc}") from None


def stats_record(bucket: Bucket, counts: Mapping[int, int], now_ms: int) -> OutgoingRecord:
    total = sum(counts.values())
    record = {"window_start": _datetime(bucket.window_start_ms),
              "window_end": _datetime(bucket.window_start_ms + WINDOW_MS),
              "notification_type": bucket.notification_type, "channel": bucket.channel,
              "status": bucket.status, "count": total, "updated_at": _datetime(now_ms)}
    event_id = derived_event_id(bucket.key, f"stats|{total}")
    return OutgoingRecord(STATUS_STATS, bucket.key.encode(), encode("herald.NotificationStatusStats", record),
                          derived_headers({}, event_id, "notification.status.stats"))


def _datetime(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)
