"""Offsets a worker has finished but not yet committed, kept until a commit succeeds.

With cooperative rebalancing a synchronous commit can fail mid-rebalance ("Group rebalance
in progress", a stale generation, no coordinator yet): librdkafka issues #3337 and #4059.
Such a failure is not a reason to stop the worker. The finished offsets stay pending and the
next attempt, after a poll has served the rebalance, commits those of partitions still
owned. A partition that moved to a sibling is dropped here: the sibling resumes from the last
committed offset and delivers those records again, which the provider drops by
Idempotency-Key. So a failed commit redelivers; it never skips.

On a transactional topic the committed offset also steps over the commit markers after the
last record (`ReadPositions`), so a caught-up group shows lag 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from herald.infra.kafka_io import logged_rebalances, records_only, settling
from herald.infra.read_positions import Owned, ReadPositions

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class CommittingConsumer(Protocol):
    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> object: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...


class PendingOffsets:
    """For a loop that handles every record it fetched before it fetches again."""

    def __init__(self, consumer: CommittingConsumer, owned: Owned) -> None:
        self._consumer = consumer
        self._owned = owned  # kept by the rebalance callbacks (see `Owned` for why not assignment())
        self._next: dict[Partition, int] = {}  # per partition, the offset to resume from
        self._committed: dict[Partition, int] = {}  # by this member, in partitions it still owns
        self._read = ReadPositions()

    def finished(self, messages: Iterable[Message]) -> None:
        for m in messages:
            partition = (m.topic(), m.partition())
            if m.offset() + 1 > self._next.get(partition, 0):
                self._next[partition] = m.offset() + 1
                self._read.handed_over(partition, m.offset())

    def __bool__(self) -> bool:
        return bool(self._next)

    def commit(self) -> bool:
        """Commit what is pending for owned partitions, past any markers after it (called after
        every fetch, so markers are stepped over once idle); False (kept pending) when it failed."""
        owned = self._owned.partitions()
        self._read.forget(self._read_partitions() - owned)  # a sibling's now: known again once read
        self._next = {p: offset for p, offset in self._next.items() if p in owned}
        self._committed = {p: offset for p, offset in self._committed.items() if p in owned}
        offsets = self._offsets_to_commit()
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise
            log.warning("commit of %d partition(s) failed (%s); kept for the next attempt",
                        len(offsets), error.str())
            return False
        self._committed.update(offsets)
        self._next.clear()
        return True

    def _read_partitions(self) -> set[Partition]:
        return {*self._next, *self._committed}

    def _offsets_to_commit(self) -> dict[Partition, int]:
        owned = self._owned.topic_partitions()
        if not owned:
            return {}
        for tp in self._consumer.position(owned):
            if tp.offset >= 0:
                self._read.reached((tp.topic, tp.partition), tp.offset)
        offsets = {}
        for partition in self._read_partitions():
            offset = self._read.resume_offset(partition, self._next.get(partition, self._committed.get(
                partition, -1)))
            if offset > self._committed.get(partition, -1):
                offsets[partition] = offset
        return offsets


@dataclass(frozen=True)
class PartitionEnd:
    """Where a consumer stands in one partition; negative offsets are librdkafka's "unknown"."""

    position: int  # past transaction markers too: librdkafka skips them
    committed: int
    low: int
    high: int

    def reached(self) -> bool:
        # Before the first fetch the position is unknown; the group resumes from the
        # committed offset, or from the low watermark (auto.offset.reset=earliest).
        start = self.position if self.position >= 0 else self.committed
        return (start if start >= 0 else self.low) >= self.high


TIMEOUTS = frozenset({KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})


def caught_up(consumer: Consumer) -> bool:
    """Every assigned partition read to its end: what a draining consumer waits for. Idle
    polls are no evidence: while a new broker's group coordinator loads, a member holds an
    assignment but fetches nothing for seconds."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    try:
        positions = consumer.position(assignment)
        committed = consumer.committed(assignment, timeout=10)
        ends = [PartitionEnd(p.offset, c.offset, *consumer.get_watermark_offsets(p, timeout=10))
                for p, c in zip(positions, committed, strict=True)]
    except KafkaException as exc:
        # A leader or coordinator moving ("Not leader for partition", seen in a fresh clone's
        # suite) or a timeout: not known to be caught up, so asked again after the next poll.
        if settling(exc, also=TIMEOUTS):
            return False
        raise
    return all(end.reached() for end in ends)


def consume_in_batches(consumer: Consumer, topics: list[str], handle: Callable[[list[Message]], None],
                       stop: threading.Event, *, name: str, logger: logging.Logger, drain: bool = False,
                       batch: int = 500, between: Callable[[], None] | None = None) -> None:
    """Subscribe to `topics` and hand each fetched batch to `handle`, committing its offsets only
    after `handle` returned, until `stop` (or, with `drain`, until caught up); then close the
    consumer. `between` runs after every fetch, empty or not (periodic chores)."""
    owned = Owned()
    pending = PendingOffsets(consumer, owned)
    consumer.subscribe(topics, **logged_rebalances(logger, name, owned))
    try:
        while not stop.is_set():
            messages = records_only(consumer.consume(batch, 0.5))
            if messages:
                handle(messages)
                pending.finished(messages)
            pending.commit()  # also after an empty fetch: it may step over markers
            if between is not None:
                between()
            if not messages and drain and not pending and caught_up(consumer):
                break
    finally:
        consumer.close()
