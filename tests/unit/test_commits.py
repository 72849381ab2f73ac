"""A commit refused mid-rebalance keeps its offsets for the next attempt; it never stops a worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from herald.consumers.commits import PendingOffsets
from herald.infra.kafka_io import logged_rebalances
from herald.infra.read_positions import Owned


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
    refusals: list[KafkaError] = field(default_factory=list)
    committed: list[list[tuple[str, int, int]]] = field(default_factory=list)
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # after the last fetch

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.refusals:
            raise KafkaException(self.refusals.pop(0))
        self.committed.append(sorted((o.topic, o.partition, o.offset) for o in offsets))


def owning(*partitions: tuple[str, int]) -> Owned:
    """As the rebalance callbacks leave it after assigning `partitions`."""
    owned = Owned()
    owned.add([TopicPartition(t, p) for t, p in partitions])
    return owned


def messages(topic: str, partition: int, *offsets: int) -> list[FakeMessage]:
    return [FakeMessage(topic, partition, o) for o in offsets]


def test_commits_the_offset_after_the_highest_finished_record_per_partition() -> None:
    consumer = FakeConsumer()
    owned = owning(("t", 0), ("t", 1))
    pending = PendingOffsets(consumer, owned)
    pending.finished([*messages("t", 0, 4, 7, 5), *messages("t", 1, 0)])
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 8), ("t", 1, 1)]]
    assert not pending


def test_a_commit_refused_during_a_rebalance_is_kept_and_merged_into_the_next() -> None:
    consumer = FakeConsumer(refusals=[KafkaError(KafkaError.REBALANCE_IN_PROGRESS)])
    owned = owning(("t", 0))
    pending = PendingOffsets(consumer, owned)
    pending.finished(messages("t", 0, 1, 2))
    assert pending.commit() is False
    assert pending and consumer.committed == []
    pending.finished(messages("t", 0, 3))
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 4)]]


def test_offsets_of_a_partition_given_to_a_sibling_are_dropped_not_committed() -> None:
    consumer = FakeConsumer(refusals=[KafkaError(KafkaError.ILLEGAL_GENERATION)])
    owned = owning(("t", 0), ("t", 1))
    pending = PendingOffsets(consumer, owned)
    pending.finished([*messages("t", 0, 9), *messages("t", 1, 9)])
    assert pending.commit() is False
    owned.remove([TopicPartition("t", 0)])  # the rebalance moved partition 0; its new owner redelivers
    assert pending.commit() is True
    assert consumer.committed == [[("t", 1, 10)]]


def test_nothing_owned_means_nothing_to_commit() -> None:
    consumer = FakeConsumer()
    owned = owning()
    pending = PendingOffsets(consumer, owned)
    pending.finished(messages("t", 0, 1))
    assert pending.commit() is True and consumer.committed == [] and not pending


def test_a_fatal_error_still_raises() -> None:
    consumer = FakeConsumer(refusals=[KafkaError(KafkaError._FATAL, fatal=True)])
    owned = owning(("t", 0))
    pending = PendingOffsets(consumer, owned)
    pending.finished(messages("t", 0, 1))
    with pytest.raises(KafkaException):
        pending.commit()


def test_a_commit_marker_after_the_last_record_is_stepped_over_also_once_idle() -> None:
    """A transaction's records at 0-2 and its commit marker at 3: committing 3 would leave lag 1."""
    consumer = FakeConsumer()
    owned = owning(("t", 0), ("t", 1))
    pending = PendingOffsets(consumer, owned)
    pending.finished(messages("t", 0, 0, 1, 2))
    consumer.positions = {("t", 0): 3}  # the marker not fetched yet
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 3)]]
    consumer.positions = {("t", 0): 4, ("t", 1): 7}  # an empty fetch stepped over it
    assert pending.commit() is True
    assert consumer.committed == [[("t", 0, 3)], [("t", 0, 4)]], "partition 1 had nothing of ours to move"
    assert pending.commit() is True and len(consumer.committed) == 2, "nothing new, nothing committed"


def test_the_logged_rebalance_callbacks_keep_what_is_owned() -> None:
    owned = Owned()
    callbacks = logged_rebalances(logging.getLogger("test"), "indexer", owned)
    callbacks["on_assign"](None, [TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("u", 0)])
    callbacks["on_revoke"](None, [TopicPartition("t", 0)])
    callbacks["on_lost"](None, [TopicPartition("u", 0)])
    assert owned.partitions() == {("t", 1)}
    assert [(tp.topic, tp.partition) for tp in owned.topic_partitions()] == [("t", 1)]
