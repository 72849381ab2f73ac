"""Per-minute outcome counts, without Faust: each outcome counted once per input offset, partials
merged so that repeats and reorders change nothing, and expired buckets dropped per partition."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from herald.schemas.catalog import STATUS_STATS
from herald.schemas.codec import decode
from herald.streams.status_agents import FORGET_EVERY_MS, KEEP_BUCKETS_MS, BucketIndex
from herald.streams.status_stats import (
    WINDOW_MS,
    Bucket,
    BucketTotal,
    Partial,
    PartitionCount,
    SeenOutcomes,
    count_once,
    first_occurrence,
    merge_partial,
    partial_record,
    read_partial,
    stats_record,
)

AT = datetime(2026, 3, 1, 8, 7, 42, 500000, tzinfo=UTC)


def outcome(status="sent", channel="whatsapp", at=AT):
    return {"notification_type": "e_ticket", "channel": channel, "status": status, "occurred_at": at}


def test_an_outcome_falls_in_the_minute_it_occurred_in():
    bucket = Bucket.of(outcome())
    assert bucket.window_start_ms == int(datetime(2026, 3, 1, 8, 7, tzinfo=UTC).timestamp() * 1000)
    assert bucket.key == "2026-03-01T08:07:00.000+00:00|e_ticket|whatsapp|sent"
    assert Bucket.of(outcome(channel="email")).key != bucket.key


def test_each_offset_is_counted_once_so_a_replay_after_a_crash_adds_nothing():
    partial = count_once(None, 10)
    assert partial == Partial(1, 10)
    partial = count_once(partial, 11)
    assert partial == Partial(2, 11)
    assert count_once(partial, 11) is None and count_once(partial, 3) is None, "replayed offsets"


def test_partials_merge_by_partition_and_only_grow():
    counts = merge_partial({}, 0, 5)
    assert counts == {0: 5}
    counts = merge_partial(counts, 3, 2)
    assert counts == {0: 5, 3: 2}
    assert merge_partial(counts, 0, 5) is None and merge_partial(counts, 0, 4) is None, "repeat, reorder"
    assert merge_partial(counts, 0, 6) == {0: 6, 3: 2}


def test_a_partial_record_round_trips_and_the_stats_record_carries_the_sum():
    bucket = Bucket.of(outcome("retry_scheduled"))
    record = partial_record(bucket, 4, Partial(7, 99))
    assert record.key == bucket.key.encode() and read_partial(record.value) == (bucket, 4, 7)
    stats = stats_record(bucket, {4: 7, 1: 3}, 1_000)
    body = decode(stats.value).record
    assert (stats.topic, stats.key) == (STATUS_STATS, bucket.key.encode())
    assert (body["count"], body["status"], body["channel"]) == (10, "retry_scheduled", "whatsapp")
    assert (body["window_end"] - body["window_start"]).total_seconds() * 1000 == WINDOW_MS


def test_expired_buckets_are_dropped_only_for_the_partition_being_processed():
    index = BucketIndex()
    now = 10 * KEEP_BUCKETS_MS
    index.note("old|0", 0, now - KEEP_BUCKETS_MS - 1, dirty=True)
    index.note("old|1", 1, now - KEEP_BUCKETS_MS - 1)
    index.note("new|0", 0, now - 1000)
    assert index.expired(0, now) == ["old|0"]
    assert "old|0" not in index.dirty and set(index.keys) == {"old|1", "new|0"}
    assert index.expired(1, now) == ["old|1"]
    index.note("old2|1", 1, 0)
    assert index.expired(1, now + 1000) == [], "at most once a minute per partition"
    assert index.expired(1, now + FORGET_EVERY_MS) == ["old2|1"]


def test_a_malformed_partial_is_named():
    try:
        read_partial(b'{"partition": 1}')
    except ValueError as exc:
        assert "malformed status partial" in str(exc)
    else:
        raise AssertionError("accepted a partial without its bucket")


def test_table_entries_survive_their_json_round_trip():
    bucket = Bucket.of(outcome("dead_lettered", "email"))
    count = PartitionCount(bucket, 3, Partial(12, 4_000))
    total = BucketTotal(bucket, 5, {0: 4, 3: 12})
    assert PartitionCount.from_json(json.loads(json.dumps(count.as_json()))) == count
    assert BucketTotal.from_json(json.loads(json.dumps(total.as_json()))) == total


def test_the_first_record_of_a_notifications_status_counts_and_a_repeat_does_not():
    counts, seen = first_occurrence(None, "sent", 2, 40, 1_000)
    assert counts and seen == SeenOutcomes(2, 1_000, {"sent": 40})
    assert first_occurrence(seen, "sent", 2, 40, 2_000) == (True, None), "the same record read again"
    assert first_occurrence(seen, "sent", 2, 57, 2_000) == (False, None), "a repeat at another offset"
    counts, seen = first_occurrence(seen, "dead_lettered", 2, 60, 3_000)
    assert counts and seen == SeenOutcomes(2, 1_000, {"sent": 40, "dead_lettered": 60})
    assert SeenOutcomes.from_json(json.loads(json.dumps(seen.as_json()))) == seen
