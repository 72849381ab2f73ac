"""Offsets a worker has finished but not yet committed, kept until a commit succeeds.

With cooperative rebalancing a synchronous commit can fail mid-rebalance ("Group rebalance
in progress", a stale generation, no coordinator yet): librdkafka issues #3337 and #4059.
Such a failure is not a reason to stop the worker. The finished offsets stay pending and the
next attempt, after a poll has served the rebalance, commits those of partitions still
owned. A partition that moved to a sibling is dropped here: the sibling resumes from the last
committed offset and delivers those records again, which the provider drops by
Idempotency-Key. So a failed commit redelivers; it never skips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class CommittingConsumer(Protocol):
    def assignment(self) -> list[TopicPartition]: ...

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> object: ...


class PendingOffsets:
    def __init__(self, consumer: CommittingConsumer) -> None:
        self._consumer = consumer
        self._next: dict[Partition, int] = {}  # per partition, the offset to resume from

    def finished(self, messages: Iterable[Message]) -> None:
        for m in messages:
            partition = (m.topic(), m.partition())
            self._next[partition] = max(self._next.get(partition, 0), m.offset() + 1)

    def __bool__(self) -> bool:
        return bool(self._next)

    def commit(self) -> bool:
        """Commit what is pending for owned partitions; False (kept pending) when it failed."""
        owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        self._next = {p: offset for p, offset in self._next.items() if p in owned}
        if not self._next:
            return True
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in self._next.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise
            log.warning("commit of %d partition(s) failed (%s); kept for the next attempt",
                        len(offsets), error.str())
            return False
        self._next.clear()
        return True


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


def caught_up(consumer: Consumer) -> bool:
    """Every assigned partition read to its end: what a draining consumer waits for. Idle
    polls are no evidence: while a new broker's group coordinator loads, a member holds an
    assignment but fetches nothing for seconds."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    positions = consumer.position(assignment)
    committed = consumer.committed(assignment, timeout=10)
    ends = [PartitionEnd(p.offset, c.offset, *consumer.get_watermark_offsets(p, timeout=10))
            for p, c in zip(positions, committed, strict=True)]
    return all(end.reached() for end in ends)
