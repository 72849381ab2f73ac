"""Committed offsets that step over transaction markers, so a caught-up group shows lag 0.

A transactional producer writes a commit (or abort) marker after its records. It takes an
offset of its own, and a consumer never receives it. A consumer that commits "last record
handed to it + 1" therefore stops one short of the end of a transactional topic: lag 1 per
partition forever, in Kafka's own `kafka-consumer-groups` as in ours (librdkafka #2539,
KAFKA-6607). Kafka's answer is to commit the consumer's position, which steps over markers
and aborted records; this module says when that is safe.

Right after a fetch, the position of a partition is one past the last record handed over,
plus whatever the client skipped after it: markers, and records of aborted transactions
(read_committed never goes past an open transaction). So the offsets from "last handed
over + 1" up to that position hold nothing a reader would ever receive, and since the log
never changes, that stays true. An offset to commit that falls in such a stretch may be
moved to its end. Pure: the consumer loops feed it what they fetched.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

Partition = Hashable  # (topic, partition) for confluent-kafka, a TP for Faust


class ReadPositions:
    """Per partition, the last stretch of offsets known to hold nothing a reader receives.

    Written by the thread that fetches, read by the one that commits (Faust's consumer
    thread and its event loop): each update replaces one tuple, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._empty: dict[Partition, tuple[int, int]] = {}  # [start, end) holds no record

    def handed_over(self, partition: Partition, offset: int) -> None:
        """A record at `offset` was handed to the application: nothing is known beyond it yet."""
        with self._lock:
            self._empty[partition] = (offset + 1, offset + 1)

    def reached(self, partition: Partition, position: int) -> None:
        """The consumer's position right after a fetch, with no record handed over since the last
        `handed_over` call for this partition."""
        with self._lock:
            known = self._empty.get(partition)
            if known is not None and position > known[1]:
                self._empty[partition] = (known[0], position)

    def forget(self, partitions: Iterable[Partition] | None = None) -> None:
        """After a rebalance or a seek: start again from the next record handed over."""
        with self._lock:
            if partitions is None:
                self._empty.clear()
            for partition in partitions or ():
                self._empty.pop(partition, None)

    def resume_offset(self, partition: Partition, offset: int) -> int:
        """The offset to commit instead of `offset`: past the markers when it points at them."""
        with self._lock:
            known = self._empty.get(partition)
        if known is not None and known[0] <= offset < known[1]:
            return known[1]
        return offset


class Owned:
    """The partitions a consumer owns, kept from its rebalance callbacks.

    confluent-kafka's `Consumer.assignment()` asks librdkafka's main thread and waits for the
    answer holding the GIL: asked after every fetch, it stalled each first-path process (the
    router's loop, a delivery worker's event loop) whenever that thread waited for a core.
    Added to by `on_assign`, taken from by `on_revoke` and `on_lost`; read by the thread that
    polls, which is the thread those callbacks run on."""

    def __init__(self) -> None:
        self._partitions: frozenset[tuple[str, int]] = frozenset()
        self._listed: list[TopicPartition] = []  # made once per rebalance, not per fetch

    def add(self, partitions: Iterable[TopicPartition]) -> None:
        self._set(self._partitions | {(tp.topic, tp.partition) for tp in partitions})

    def remove(self, partitions: Iterable[TopicPartition]) -> None:
        self._set(self._partitions - {(tp.topic, tp.partition) for tp in partitions})

    def topic_partitions(self) -> list[TopicPartition]:
        return self._listed

    def partitions(self) -> frozenset[tuple[str, int]]:
        return self._partitions

    def _set(self, partitions: frozenset[tuple[str, int]]) -> None:
        self._partitions = partitions
        self._listed = [TopicPartition(topic, partition) for topic, partition in sorted(partitions)]


def note_fetched(read: ReadPositions, consumer: Consumer, owned: Owned, messages: list[Message]) -> None:
    """Right after a confluent-kafka fetch: what it handed over, and where each owned partition
    stands (also when nothing came: a marker may have been read past)."""
    for message in messages:
        if message.error() is None:
            read.handed_over((message.topic(), message.partition()), message.offset())
    assignment = owned.topic_partitions()
    for tp in consumer.position(assignment) if assignment else ():
        if tp.offset >= 0:
            read.reached((tp.topic, tp.partition), tp.offset)
