"""What ops commands read from Kafka: a compacted topic's live entries, and consumer group lag.

Both are bounded by a deadline and fail with KafkaUnavailable naming the broker, so a health
check or a CLI command never hangs on a broker that is down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import RDKAFKA_LOG, settling
from herald.schemas.headers import DUE_AT, parse_iso


class KafkaUnavailable(RuntimeError):
    """The broker did not answer within the deadline; the message names it."""


@dataclass(frozen=True)
class Entry:
    key: bytes
    value: bytes
    headers: dict[str, str]


def live_entries(bootstrap: str, topic: str, timeout_s: float = 10.0,
                 since_ms: int | None = None) -> dict[bytes, Entry]:
    """The latest record per key of a compacted topic, tombstoned keys left out: what is open.

    Reads every partition from the start (or from its first record written at or after
    `since_ms`) to the end it had when the read began."""
    consumer = _view_consumer(bootstrap)
    deadline = Deadline(timeout_s)
    try:
        starts, ends = _range(consumer, topic, since_ms, deadline)
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        latest: dict[bytes, Entry | None] = {}
        while not _reached(consumer, ends):
            if deadline.expired():
                raise KafkaUnavailable(f"{topic} was not read to its end within {timeout_s:.0f} s")
            for message in consumer.consume(1000, 0.2):
                if message.error() is None and message.key() is not None:
                    value = message.value()
                    latest[message.key()] = None if value is None else Entry(
                        message.key(), value, {k: (v or b"").decode("utf-8", "replace")
                                               for k, v in message.headers() or []})
        return {key: entry for key, entry in latest.items() if entry is not None}
    finally:
        consumer.close()


def all_entries(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Entry]:
    """Every committed record of a topic, from the start to the end it had when the read began."""
    consumer = _view_consumer(bootstrap)
    deadline = Deadline(timeout_s)
    try:
        ends = _ends(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        entries = []
        while not _reached(consumer, ends):
            if deadline.expired():
                raise KafkaUnavailable(f"{topic} was not read to its end within {timeout_s:.0f} s")
            entries += [Entry(m.key() or b"", m.value() or b"",
                              {k: (v or b"").decode("utf-8", "replace") for k, v in m.headers() or []})
                        for m in consumer.consume(1000, 0.2) if m.error() is None]
        return entries
    finally:
        consumer.close()


def _range(consumer: Consumer, topic: str, since_ms: int | None,
           deadline: Deadline) -> tuple[dict[int, int], dict[int, int]]:
    """Where to start each partition, and its end: only partitions with something to read."""
    ends = _ends(consumer, topic, deadline)
    if since_ms is None:
        return dict.fromkeys(ends, 0), ends
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in ends],
                                           timeout=max(deadline.remaining(), 0.1))
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not answer for {topic}: {exc.args[0].str()}") from None
    starts = {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}
    return starts, {p: end for p, end in ends.items() if starts[p] < end}


def _view_consumer(bootstrap: str, **overrides: object) -> Consumer:
    """A consumer that only looks: assigned by hand, committing nothing, committed records only."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"herald-view-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "isolation.level": "read_committed", "logger": RDKAFKA_LOG,
                     **overrides})


def _ends(consumer: Consumer, topic: str, deadline: Deadline) -> dict[int, int]:
    try:
        metadata = consumer.list_topics(topic, timeout=max(deadline.remaining(), 0.1))
        partitions = metadata.topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                  timeout=max(deadline.remaining(), 0.1))[1]
                for p in partitions}
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not answer for {topic}: {exc.args[0].str()}") from None


def _reached(consumer: Consumer, ends: dict[int, int]) -> bool:
    positions = consumer.position([TopicPartition(tp.topic, tp.partition) for tp in consumer.assignment()])
    where = {tp.partition: tp.offset for tp in positions}
    return all(end == 0 or where.get(p, -1) >= end for p, end in ends.items())


@dataclass(frozen=True)
class GroupView:
    """A consumer group as health sees it."""

    group: str
    state: str  # the broker's: Stable, Empty, Dead, PreparingRebalance, ...
    members: int
    member_names: tuple[str, ...]  # client.id@host of each
    lag: int  # records from each partition's committed offset (its start, if none) to its end
    lag_s: float  # how long the oldest unconsumed record has waited (since its due-at, if it has one)


def group_views(bootstrap: str, groups: Sequence[tuple[str, Sequence[str]]],
                timeout_s: float = 10.0) -> dict[str, GroupView]:
    """Each (group, the topics it reads): its live members, and its lag in records and seconds.

    Lag counts every partition of the topics, so a group that never committed (or is gone)
    still shows what waits for it. Ends are the log end offsets, as Kafka's
    kafka-consumer-groups tool counts them."""
    if not groups:
        return {}
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    # Asked again while leadership settles (a topic just created, a broker back), for as long as
    # the timeout allows: three tries 0.5 s apart once fell short on a loaded CI machine.
    deadline = Deadline(timeout_s)
    while True:
        try:
            members, starts, lows, ends = _group_offsets(admin, groups, max(deadline.remaining(), 1.0))
            break
        except (KafkaException, TimeoutError) as exc:
            if deadline.remaining() < 0.5 or not settling(exc):
                raise KafkaUnavailable(f"Kafka did not answer about consumer groups: {exc}") from None
            time.sleep(0.5)
    for group_starts in starts.values():  # no commit yet: the group starts at the earliest record
        for tp, offset in group_starts.items():
            group_starts[tp] = offset if offset >= 0 else lows[tp]
    waited = _oldest_waits(bootstrap, {(tp.topic, tp.partition, offset) for s in starts.values()
                                       for tp, offset in s.items() if offset < ends[tp]}, timeout_s)
    return {group: GroupView(group, *members[group],
                             sum(max(0, ends[tp] - offset) for tp, offset in starts[group].items()),
                             max((waited.get((tp.topic, tp.partition, offset), 0.0)
                                  for tp, offset in starts[group].items()), default=0.0))
            for group, _topics in groups}


# A new broker answers these for a while (and for a group it loads, a moment after restarting).
COORDINATOR_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                         KafkaError.COORDINATOR_LOAD_IN_PROGRESS}


def _members(admin: AdminClient, groups: list[str],
             timeout_s: float) -> dict[str, tuple[str, int, tuple[str, ...]]]:
    """(state, members, their client.id@host) per group; asked again while a coordinator loads."""
    found: dict[str, tuple[str, int, tuple[str, ...]]] = {}
    deadline, pending = Deadline(timeout_s), list(groups)
    while pending:
        again = []
        for group, future in admin.describe_consumer_groups(pending, request_timeout=timeout_s).items():
            # Asked, not raised (see infra.demo._group_readiness: a raised error kept the client alive).
            error = future.exception(timeout_s)
            code = error.args[0].code() if isinstance(error, KafkaException) else None
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                found[group] = ("Dead", 0, ())  # a group that never existed, on some brokers
            elif code in COORDINATOR_NOT_READY and not deadline.expired():
                again.append(group)
            elif error is not None:
                raise KafkaUnavailable(f"Kafka did not describe {group}: {error}")
            else:
                description = future.result()
                names = tuple(sorted(f"{m.client_id}@{m.host.lstrip('/')}" for m in description.members))
                found[group] = (description.state.name.title().replace("_", ""), len(names), names)
        pending = again
        if pending:
            time.sleep(0.3)
    return found


def _partitions(admin: AdminClient, topics: set[str], timeout_s: float) -> dict[str, list[int]]:
    metadata = admin.list_topics(timeout=timeout_s).topics
    return {t: sorted(metadata[t].partitions) for t in topics if t in metadata}


def _committed(admin: AdminClient, group: str, tps: list[TopicPartition],
               timeout_s: float) -> dict[TopicPartition, int]:
    request = [ConsumerGroupTopicPartitions(group, tps)]
    answer = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group].result(timeout_s)
    return {TopicPartition(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions}


_Offsets = dict[TopicPartition, int]
_Members = dict[str, tuple[str, int, tuple[str, ...]]]  # group -> (state, members, their names)


def _group_offsets(admin: AdminClient, groups: Sequence[tuple[str, Sequence[str]]], timeout_s: float
                   ) -> tuple[_Members, dict[str, _Offsets], _Offsets, _Offsets]:
    """The groups' members, committed offsets, and the low and end watermarks of their partitions."""
    members = _members(admin, [group for group, _topics in groups], timeout_s)
    partitions = _partitions(admin, {t for _g, topics in groups for t in topics}, timeout_s)
    starts: dict[str, _Offsets] = {}
    for group, topics in groups:
        tps = [TopicPartition(t, p) for t in topics for p in partitions.get(t, ())]
        starts[group] = _committed(admin, group, tps, timeout_s) if tps else {}
    lows, ends = _watermarks(admin, {tp for s in starts.values() for tp in s}, timeout_s)
    return members, starts, lows, ends


def _watermarks(admin: AdminClient, tps: set[TopicPartition],
                timeout_s: float) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    if not tps:
        return {}, {}
    lows, ends = ({tp: spec for tp in tps} for spec in (OffsetSpec.earliest(), OffsetSpec.latest()))
    low = admin.list_offsets(lows, request_timeout=timeout_s)
    end = admin.list_offsets(ends, request_timeout=timeout_s)
    return ({tp: f.result(timeout_s).offset for tp, f in low.items()},
            {tp: f.result(timeout_s).offset for tp, f in end.items()})


def _oldest_waits(bootstrap: str, positions: Iterable[tuple[str, int, int]],
                  timeout_s: float) -> dict[tuple[str, int, int], float]:
    """For each (topic, partition, offset): seconds since the first record at or after it that a
    read_committed consumer receives became due (its due-at header, else its timestamp)."""
    pending = sorted(positions)
    waited: dict[tuple[str, int, int], float] = {}
    if not pending:
        return waited
    consumer = _view_consumer(bootstrap, **{"fetch.wait.max.ms": 50})  # markers only: no long wait
    deadline = Deadline(timeout_s)
    try:
        while pending and not deadline.expired():
            round_, pending = _one_offset_per_partition(pending)
            consumer.assign([TopicPartition(t, p, o) for t, p, o in round_])
            waited.update(_first_records(consumer, round_, Deadline(min(2.0, deadline.remaining()))))
    finally:
        consumer.close()
    return waited


def _one_offset_per_partition(positions: list[tuple[str, int, int]]) -> tuple[list[tuple[str, int, int]],
                                                                             list[tuple[str, int, int]]]:
    this, later, seen = [], [], set()
    for topic, partition, offset in positions:
        (later if (topic, partition) in seen else this).append((topic, partition, offset))
        seen.add((topic, partition))
    return this, later


def _first_records(consumer: Consumer, round_: list[tuple[str, int, int]],
                   deadline: Deadline) -> dict[tuple[str, int, int], float]:
    wanted = {(t, p): o for t, p, o in round_}
    found: dict[tuple[str, int, int], float] = {}
    while wanted and not deadline.expired():  # what never comes (markers only) waited 0 s
        for message in consumer.consume(100, 0.1):
            key = (message.topic(), message.partition())
            if message.error() is not None or key not in wanted:
                continue
            found[(*key, wanted.pop(key))] = _waited_s(message)
            consumer.pause([TopicPartition(*key)])
    return found


def _waited_s(message: Message) -> float:
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in message.headers() or []}
    due = parse_iso(headers.get(DUE_AT))
    since = due.timestamp() if due is not None else message.timestamp()[1] / 1000
    return max(0.0, time.time() - since)
