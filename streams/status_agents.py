"""The status stream for analysts in Faust: per-minute counts into `notifications.status.stats`.

- `status-counter` reads `notifications.status`, drops repeated outcomes (the same
  notification and status again: `SeenOutcomes`, in a changelogged table keyed by
  notification id, which is the input's key, so each entry lives in its input partition),
  and keeps, per input partition and bucket, a
  `Partial` (count and last offset counted) in a changelogged table. A timer sends the
  partials that changed (`streams.status.partials`, keyed by bucket), once a second by
  default, not once per outcome; after a recovery it sends every partial again.
- `status-totals` keeps each bucket's partial per input partition in a second table and
  produces the bucket's sum whenever it grows.
Buckets are forgotten two hours after their minute: an outcome older than that is not
counted (and logged), since its bucket would start again from zero. A notification's seen
outcomes are forgotten two hours after its first one: a repeat later than that counts again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from herald.schemas.catalog import NOTIFICATION_STATUS, STATUS_PARTIALS, qualified
from herald.streams.config import StreamsConfig
from herald.streams.faust_io import RAW_BYTES, SEND_FAILURES, JsonTable, Send, decoded_or_dead_letter
from herald.streams.status_stats import (
    Bucket,
    BucketTotal,
    PartitionCount,
    SeenOutcomes,
    count_once,
    first_occurrence,
    merge_partial,
    partial_record,
    read_partial,
    stats_record,
)

log = logging.getLogger(__name__)

KEEP_BUCKETS_MS = 2 * 60 * 60 * 1000
FORGET_EVERY_MS = 60_000  # how often an agent drops its partition's expired buckets


class BucketIndex:
    """Table keys by (partition, bucket), to flush the changed ones and drop the expired ones.
    A key may only be deleted while processing an event of its own partition (Faust writes
    the tombstone to the changelog partition of the event being processed)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[int, int]] = {}  # table key -> (partition, window start)
        self.dirty: set[str] = set()
        self._forgotten_at: dict[int, int] = {}

    def note(self, key: str, partition: int, window_start_ms: int, dirty: bool = False) -> None:
        self.keys[key] = (partition, window_start_ms)
        if dirty:
            self.dirty.add(key)

    def expired(self, partition: int, now_ms: int) -> list[str]:
        """This partition's keys past keeping, at most once a minute per partition."""
        if now_ms - self._forgotten_at.get(partition, 0) < FORGET_EVERY_MS:
            return []
        self._forgotten_at[partition] = now_ms
        oldest = now_ms - KEEP_BUCKETS_MS
        gone = [k for k, (p, start) in self.keys.items() if p == partition and start < oldest]
        for key in gone:
            del self.keys[key]
            self.dirty.discard(key)
        return gone


def add_status_stats(app: faust.App, config: StreamsConfig, send: Send) -> None:
    """Wire the two stages into `app`; `send` produces the stats records."""
    namespace = config.namespace
    partials = app.topic(qualified(STATUS_PARTIALS, namespace), **RAW_BYTES)
    counts = JsonTable(app.Table("status-partials", partitions=6, default=None, key_type=bytes,
                                 value_type=bytes), PartitionCount.from_json)
    totals = JsonTable(app.Table("status-totals", partitions=6, default=None, key_type=bytes,
                                 value_type=bytes), BucketTotal.from_json)
    seen = JsonTable(app.Table("status-seen", partitions=6, default=None, key_type=bytes, value_type=bytes),
                     SeenOutcomes.from_json)
    counted, summed, remembered = BucketIndex(), BucketIndex(), BucketIndex()

    @app.agent(app.topic(qualified(NOTIFICATION_STATUS, namespace), **RAW_BYTES), name="status-counter")
    async def count_outcomes(stream: faust.StreamT) -> None:
        async for event in stream.events():
            partition, offset, now_ms = event.message.partition, event.message.offset, _now_ms()
            _forget(counts, counted, partition, now_ms)
            _forget(seen, remembered, partition, now_ms)
            outcome = await decoded_or_dead_letter(event, NOTIFICATION_STATUS, "herald.NotificationStatus",
                                                   send, "status-counter")
            bucket = None if outcome is None else _bucket_of(outcome, now_ms)
            if bucket is None:
                continue
            notification_id = str(outcome["notification_id"])
            counts_now, first = first_occurrence(seen.get(notification_id), bucket.status, partition, offset,
                                                 now_ms)
            if not counts_now:
                log.debug("status counter: %s %s again at %d, not counted", notification_id, bucket.status,
                          offset)
                continue
            key = f"{bucket.key}|{partition}"
            known = counts.get(key)
            partial = count_once(known.partial if known else None, offset)
            if partial is not None:
                counts.put(key, PartitionCount(bucket, partition, partial))
                counted.note(key, partition, bucket.window_start_ms, dirty=True)
            if first is not None:  # after the count: a crash in between counts it on the replay
                seen.put(notification_id, first)
                remembered.note(notification_id, partition, first.first_seen_ms)

    @counts.on_recover
    async def resend_recovered() -> None:
        for key, entry in counts.items():
            counted.note(key, entry.partition, entry.bucket.window_start_ms, dirty=True)

    @seen.on_recover
    async def index_seen() -> None:
        for key, entry in seen.items():
            remembered.note(key, entry.partition, entry.first_seen_ms)

    @app.timer(interval=config.status_flush_interval_s)
    async def flush_partials() -> None:
        keys, counted.dirty = list(counted.dirty), set()
        for n, key in enumerate(keys):
            entry = counts.get(key)
            if entry is not None:  # None: revoked or forgotten meanwhile
                record = partial_record(entry.bucket, entry.partition, entry.partial)
                try:
                    await partials.send(key=record.key, value=record.value)
                except SEND_FAILURES as exc:
                    log.warning("status partials wait for the broker (%s: %s)", type(exc).__name__, exc)
                    counted.dirty.update(keys[n:])
                    return

    @app.agent(partials, name="status-totals")
    async def sum_partials(stream: faust.StreamT) -> None:
        async for event in stream.events():
            table_partition, now_ms = event.message.partition, _now_ms()
            _forget(totals, summed, table_partition, now_ms)
            try:
                bucket, partition, count = read_partial(event.value)
            except ValueError as exc:  # written only by the counter; skipped loudly
                log.error("status totals skip %s@%d: %s", event.message.topic, event.message.offset, exc)
                continue
            known = totals.get(bucket.key)
            merged = merge_partial(known.counts if known else {}, partition, count)
            if merged is not None:
                totals.put(bucket.key, BucketTotal(bucket, table_partition, merged))
                summed.note(bucket.key, table_partition, bucket.window_start_ms)
                await send(stats_record(bucket, merged, now_ms))

    @totals.on_recover
    async def index_totals() -> None:
        for key, entry in totals.items():
            summed.note(key, entry.table_partition, entry.bucket.window_start_ms)


def _bucket_of(outcome: dict[str, Any], now_ms: int) -> Bucket | None:
    bucket = Bucket.of(outcome)
    if bucket.window_start_ms < now_ms - KEEP_BUCKETS_MS:
        log.warning("status counter: an outcome of %s is older than its kept buckets; not counted",
                    outcome["occurred_at"])
        return None
    return bucket


def _forget(table: JsonTable[Any], index: BucketIndex, partition: int, now_ms: int) -> None:
    for key in index.expired(partition, now_ms):
        table.put(key, None)


def _now_ms() -> int:
    return int(time.time() * 1000)
