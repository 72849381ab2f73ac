"""A refused transaction is aborted and its finished work committed again; only when that fails
too are the partitions rewound (and delivered again)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from herald.consumers import worker as worker_module
from herald.consumers.worker import DeliveryWorker, WorkerConfig
from herald.schemas.records import OutgoingRecord

P0 = ("notifications.email", 0)
REFUSED = KafkaError(KafkaError.ILLEGAL_GENERATION, "generation moved on", txn_requires_abort=True)


@dataclass
class FakeProducer:
    refusals: int  # how many commits to refuse
    init_timeouts: int = 0  # how many init_transactions time out (the broker unreachable)
    calls: list[str] = field(default_factory=list)
    committed_offsets: list[list[TopicPartition]] = field(default_factory=list)

    def init_transactions(self, timeout: float) -> None:
        if self.init_timeouts:
            self.init_timeouts -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out, retry call to resume"))
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic, value, key, headers, on_delivery) -> None:
        self.calls.append(f"produce {topic}")

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self.committed_offsets.append(offsets)

    def commit_transaction(self, timeout: float) -> None:
        if self.refusals:
            self.refusals -= 1
            raise KafkaException(REFUSED)
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")


@dataclass
class FakeConsumer:
    owned: list[tuple[str, int]]
    seeks: list[TopicPartition] = field(default_factory=list)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.owned]

    def consumer_group_metadata(self) -> object:
        return object()

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)


def worker_with(producer: FakeProducer, consumer: FakeConsumer) -> DeliveryWorker:
    config = WorkerConfig(topic="notifications.email", namespace="", consumer_group="g", concurrency=4)
    worker = DeliveryWorker(config, consumer, lambda _id: producer, handler=None)  # type: ignore[arg-type]
    for offset in (5, 6):
        entry = worker._inflight.start(P0, offset)
        worker._inflight.finish(entry, [OutgoingRecord("notifications.status", b"k", b"v", {})])
    return worker


def test_a_refused_commit_is_retried_with_the_same_finished_work():
    producer, consumer = FakeProducer(refusals=1), FakeConsumer([P0])
    worker = worker_with(producer, consumer)
    worker._commit_finished()
    assert producer.calls.count("abort") == 1 and producer.calls[-1] == "commit"
    assert [tp.offset for tp in producer.committed_offsets[-1]] == [7]
    assert consumer.seeks == [], "nothing rewound: nothing reaches the provider twice"
    assert (worker.stats.transactions, worker.stats.failed_transactions, worker.stats.committed) == (1, 1, 2)


def test_refused_twice_rewinds_to_the_first_uncommitted_record():
    producer, consumer = FakeProducer(refusals=2), FakeConsumer([P0])
    worker = worker_with(producer, consumer)
    worker._commit_finished()
    assert [(tp.partition, tp.offset) for tp in consumer.seeks] == [(0, 5)]
    assert worker.stats.transactions == 0 and worker.stats.failed_transactions == 2


def test_work_of_a_partition_no_longer_owned_is_not_committed_again():
    producer, consumer = FakeProducer(refusals=1), FakeConsumer([])
    worker = worker_with(producer, consumer)
    worker._commit_finished()
    assert producer.calls.count("commit") == 0 and consumer.seeks == []


def test_a_broker_that_cannot_initialise_transactions_pauses_commits_without_losing_work():
    producer, consumer = FakeProducer(refusals=0, init_timeouts=2), FakeConsumer([P0])
    worker = worker_with(producer, consumer)
    for _ in range(2):  # the broker is down: nothing committed, nothing rewound, nothing raised
        worker._backoff_until = 0.0
        worker._commit_finished()
    assert producer.calls == [] and consumer.seeks == []
    worker._backoff_until = 0.0
    worker._commit_finished()  # back: the same producer resumes and the finished work commits
    assert producer.calls[0] == "init" and producer.calls[-1] == "commit"
    assert [tp.offset for tp in producer.committed_offsets[-1]] == [7]
    assert worker.stats.committed == 2


@dataclass
class HangingProducer(FakeProducer):
    """send_offsets_to_transaction blocks past its timeout, as librdkafka's does (#5456)."""
    release: threading.Event = field(default_factory=threading.Event)

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self.release.wait(30)


def test_a_send_offsets_blocked_past_its_timeout_drops_the_producer_and_rewinds(monkeypatch):
    monkeypatch.setattr(worker_module, "SEND_OFFSETS_GRACE_S", 0.2)
    hanging, consumer = HangingProducer(refusals=0), FakeConsumer([P0])
    producers = [hanging, FakeProducer(refusals=0, init_timeouts=1)]
    config = WorkerConfig(topic="notifications.email", namespace="", consumer_group="g", concurrency=4,
                          transaction_timeout_s=0.1)
    worker = DeliveryWorker(config, consumer, lambda _id: producers.pop(0), handler=None)  # type: ignore[arg-type]
    for offset in (5, 6):
        entry = worker._inflight.start(P0, offset)
        worker._inflight.finish(entry, [OutgoingRecord("notifications.status", b"k", b"v", {})])
    started = time.monotonic()
    try:
        worker._commit_finished()
    finally:
        hanging.release.set()
    assert time.monotonic() - started < 5, "the worker waited for the blocked call"
    assert worker.stats.failed_transactions == 1 and worker.stats.transactions == 0
    assert [(tp.partition, tp.offset) for tp in consumer.seeks] == [(0, 5)], "rewound: delivered again"
    assert producers == [], "a new producer (a new transactional.id) was asked for"
    assert worker._producer is not hanging
