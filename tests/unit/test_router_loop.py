"""The router's loop with a fake consumer and producer: one transaction per batch, with the
requests and each partition's next offset; a batch that cannot commit is sought back and
routed again; an idle loop commits past trailing transaction markers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from herald.schemas.codec import encode
from herald.streams.router import Router
from herald.streams.router_loop import RouterLoop, RouterLoopConfig
from tests.catalogs import example
from tests.unit.test_router import event
from tests.unit.test_worker_transactions import FakeProducer

TOPIC = "ns.registrations.events"


@dataclass
class FakeMessage:
    partition_: int
    offset_: int
    value_: bytes

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return b"REG-7"

    def value(self) -> bytes:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return []


@dataclass
class FakeConsumer:
    batches: list[list[FakeMessage]]
    positions: dict[int, int] = field(default_factory=dict)  # partition -> position after the fetch
    seeks: list[tuple[int, int]] = field(default_factory=list)
    assignment_asked: int = 0

    def poll(self, timeout: float) -> FakeMessage | None:
        if not self.batches or not self.batches[0]:
            if self.batches:
                self.batches.pop(0)
            return None
        return self.batches[0].pop(0)

    def consume(self, count: int, timeout: float) -> list[FakeMessage]:
        rest = self.batches.pop(0) if self.batches else []
        return rest[:count]

    def assignment(self) -> list[TopicPartition]:
        self.assignment_asked += 1
        return [TopicPartition(TOPIC, p) for p in (0, 1)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        unknown = -1001  # librdkafka's OFFSET_INVALID
        return [TopicPartition(TOPIC, tp.partition, self.positions.get(tp.partition, unknown))
                for tp in partitions]

    def consumer_group_metadata(self) -> object:
        return object()

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


def verified(offset: int) -> bytes:
    return encode("herald.RegistrationEvent", {**event("payment_verified"), "event_id": f"e-{offset}"})


def loop_with(consumer: FakeConsumer, producer: FakeProducer) -> RouterLoop:
    config = RouterLoopConfig(group="ns.herald-streams", namespace="ns",
                              topics={TOPIC: "registrations.events"}, idle_commit_s=0.0)
    loop = RouterLoop(config, Router(example()), consumer, lambda _id: producer)  # type: ignore[arg-type]
    loop._on_assign(consumer, [TopicPartition(TOPIC, p) for p in (0, 1)])  # type: ignore[arg-type]  # the group's
    return loop


def test_a_batch_is_one_transaction_of_its_requests_and_each_partitions_next_offset():
    batch = [FakeMessage(0, 5, verified(5)), FakeMessage(1, 9, verified(9)), FakeMessage(0, 6, verified(6))]
    producer = FakeProducer(refusals=0)
    loop = loop_with(FakeConsumer([batch], {0: 7, 1: 10}), producer)
    assert loop.step()
    assert producer.calls.count("begin") == producer.calls.count("commit") == 1
    assert sorted(c for c in producer.calls if c.startswith("produce")) == sorted(
        ["produce ns.notifications.whatsapp", "produce ns.notifications.email"] * 3)
    assert [(tp.partition, tp.offset) for tp in producer.committed_offsets[0]] == [(0, 7), (1, 10)]
    assert (loop.stats.consumed, loop.stats.committed, loop.stats.produced) == (3, 3, 6)


def test_a_batch_refused_twice_is_sought_back_to_its_first_offsets():
    batch = [FakeMessage(0, 5, verified(5)), FakeMessage(1, 9, verified(9)), FakeMessage(0, 6, verified(6))]
    consumer, producer = FakeConsumer([batch]), FakeProducer(refusals=2)
    loop = loop_with(consumer, producer)
    assert not loop.step()
    assert sorted(consumer.seeks) == [(0, 5), (1, 9)]
    assert (loop.stats.rewound, loop.stats.committed, loop.stats.failed_transactions) == (3, 0, 2)


def test_a_broker_that_cannot_initialise_transactions_rewinds_the_batch():
    consumer, producer = FakeConsumer([[FakeMessage(0, 5, verified(5))]]), FakeProducer(0, init_timeouts=1)
    loop = loop_with(consumer, producer)
    assert not loop.step()
    assert consumer.seeks == [(0, 5)] and producer.calls == []


def test_an_idle_loop_commits_past_the_markers_behind_its_last_record():
    consumer, producer = FakeConsumer([[FakeMessage(0, 5, verified(5))]], {0: 6}), FakeProducer(0)
    loop = loop_with(consumer, producer)
    assert loop.step()
    assert [(tp.partition, tp.offset) for tp in producer.committed_offsets[-1]] == [(0, 6)]
    consumer.positions[0] = 8  # a transaction's marker (and an aborted record) read past since
    consumer.batches.append([])  # a fetch that found no record
    assert loop.step()
    assert [(tp.partition, tp.offset) for tp in producer.committed_offsets[-1]] == [(0, 8)]
    assert loop.stats.committed == 1, "an offsets-only commit counts no input"
    assert consumer.assignment_asked == 0, "the partitions come from the rebalance callbacks"


def test_a_revoked_partition_is_no_longer_asked_where_it_stands():
    consumer, producer = FakeConsumer([[], []], {0: 6, 1: 3}), FakeProducer(0)
    loop = loop_with(consumer, producer)
    asked: list[list[int]] = []
    position = consumer.position
    consumer.position = lambda tps: asked.append([tp.partition for tp in tps]) or position(tps)  # type: ignore[method-assign]
    loop.step()
    loop._on_revoke(consumer, [TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]
    loop.step()
    assert asked == [[0, 1], [0]]


@dataclass
class FailedFetch(FakeMessage):
    """What librdkafka hands back in place of a record when the consumer failed."""

    fatal: bool = False

    def error(self) -> KafkaError:  # type: ignore[override]
        return KafkaError(KafkaError.FENCED_INSTANCE_ID, "another process joined as us", fatal=self.fatal)


def test_a_fatal_consumer_error_ends_the_loop_and_a_passing_one_is_counted():
    passing = FailedFetch(0, 0, b"", fatal=False)
    consumer = FakeConsumer([[passing, FakeMessage(0, 5, verified(5))]], {0: 6})
    loop = loop_with(consumer, FakeProducer(refusals=0))
    assert loop.step()
    assert (loop.stats.consumer_errors, loop.stats.committed) == (1, 1)
    fenced = loop_with(FakeConsumer([[FailedFetch(0, 0, b"", fatal=True)]]), FakeProducer(refusals=0))
    with pytest.raises(KafkaException, match="another process joined as us"):
        fenced.step()


def test_a_router_with_an_instance_id_keeps_its_transactional_id_across_restarts():
    config = RouterLoopConfig(group="ns.herald-streams", namespace="ns",
                              topics={TOPIC: "registrations.events"}, instance_id="host-a-streams")
    first, restarted = (RouterLoop(config, Router(example()), FakeConsumer([]), lambda _id: FakeProducer(0))
                        for _ in range(2))
    assert first.checkpoint.transactional_id == restarted.checkpoint.transactional_id == \
        "ns.herald-streams.host-a-streams"
    anonymous = loop_with(FakeConsumer([]), FakeProducer(0)).checkpoint.transactional_id
    assert anonymous.startswith("ns.herald-streams.") and anonymous != loop_with(
        FakeConsumer([]), FakeProducer(0)).checkpoint.transactional_id
