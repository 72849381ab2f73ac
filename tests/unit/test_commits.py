"""A commit refused mid-rebalance keeps its offsets for the next attempt; it never stops a worker."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from herald.consumers.commits import PendingOffsets


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


@dataclass
class FakeConsumer:
    owned: list[tuple[str, int]]
    refusals: list[KafkaError] = field(default_factory=list)
    committed: list[list[tuple[str, int, int]]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # after the last fetch

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.owned]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.refusals:
            raise KafkaException(self.refusals.pop(0))
        self.committed.append(sorted((o.topic, o.partition, o.offset) for o in offsets))


def messages(topic: str, partition: int, *offsets: int) -> list[FakeMessage]:
    return [FakeMessage(topic, partition, o) for o in offsets]


def test_commits_the_offset_after_the_highest_finished_record_per_partition() -> None:
    consumer = FakeConsumer(owned=[("t", 0), ("t", 1)])
    pending = PendingOffsets(consumer)
    pending.finished([*messages("t", 0, 4, 7, 5), *messages("t", 1, 0)])
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 8), ("t", 1, 1)]]
    assert not pending


def test_a_commit_refused_during_a_rebalance_is_kept_and_merged_into_the_next() -> None:
    consumer = FakeConsumer(owned=[("t", 0)], refusals=[KafkaError(KafkaError.REBALANCE_IN_PROGRESS)])
    pending = PendingOffsets(consumer)
    pending.finished(messages("t", 0, 1, 2))
    assert pending.commit() is False
    assert pending and consumer.committed == []
    pending.finished(messages("t", 0, 3))
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 4)]]


def test_offsets_of_a_partition_given_to_a_sibling_are_dropped_not_committed() -> None:
    consumer = FakeConsumer(owned=[("t", 0), ("t", 1)],
                            refusals=[KafkaError(KafkaError.ILLEGAL_GENERATION)])
    pending = PendingOffsets(consumer)
    pending.finished([*messages("t", 0, 9), *messages("t", 1, 9)])
    assert pending.commit() is False
    consumer.owned = [("t", 1)]  # the rebalance moved partition 0; its new owner redelivers
    assert pending.commit() is True
    assert consumer.committed == [[("t", 1, 10)]]


def test_nothing_owned_means_nothing_to_commit() -> None:
    consumer = FakeConsumer(owned=[])
    pending = PendingOffsets(consumer)
    pending.finished(messages("t", 0, 1))
    assert pending.commit() is True and consumer.committed == [] and not pending


def test_a_fatal_error_still_raises() -> None:
    consumer = FakeConsumer(owned=[("t", 0)], refusals=[KafkaError(KafkaError._FATAL, fatal=True)])
    pending = PendingOffsets(consumer)
    pending.finished(messages("t", 0, 1))
    with pytest.raises(KafkaException):
        pending.commit()


def test_a_commit_marker_after_the_last_record_is_stepped_over_also_once_idle() -> None:
    """A transaction's records at 0-2 and its commit marker at 3: committing 3 would leave lag 1."""
    consumer = FakeConsumer(owned=[("t", 0), ("t", 1)])
    pending = PendingOffsets(consumer)
    pending.finished(messages("t", 0, 0, 1, 2))
    consumer.positions = {("t", 0): 3}  # the marker not fetched yet
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 3)]]
    consumer.positions = {("t", 0): 4, ("t", 1): 7}  # an empty fetch stepped over it
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 3)], [("t", 0, 4)]], "partition 1 had nothing of ours to move"
    assert pending.commit() is True and len(consumer.committed) == 2, "nothing new, nothing committed"

