"""A delivery worker's checkpoint, through its public methods: a refused transaction is aborted
and its finished work committed again; only when that fails too is the work handed back to be
rewound (and delivered again)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from herald.consumers.inflight import InFlight
from herald.consumers.worker import WorkerStats
from herald.infra import checkpoint as checkpoint_module
from herald.infra.checkpoint import Checkpoint, Taken
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

    def produce(self, topic, value, key, headers) -> None:
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

    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None:
        self.calls.append("purge")


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


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def checkpoint_with(producers: list[FakeProducer], consumer: FakeConsumer, timeout_s: float = 5.0,
                    clock: Clock | None = None,
                    ids: list[str] | None = None) -> tuple[Checkpoint, WorkerStats]:
    """A checkpoint taking its producers from `producers`; each transactional.id asked goes to `ids`."""
    stats, asked = WorkerStats(), ids if ids is not None else []

    def new_producer(transactional_id: str) -> FakeProducer:
        asked.append(transactional_id)
        return producers.pop(0)
    checkpoint = Checkpoint(consumer, new_producer, transactional_prefix="g", namespace="",  # type: ignore[arg-type]
                            transaction_timeout_s=timeout_s, counts=stats, clock=clock or Clock())
    return checkpoint, stats


def finished_work() -> Taken:
    """Offsets 5 and 6 of P0, both finished, each with one outcome record."""
    inflight = InFlight()
    for offset in (5, 6):
        entry = inflight.start(P0, offset)
        inflight.finish(entry, [OutgoingRecord("notifications.status", b"k", b"v", {})])
    return inflight.take_finished(None)


def test_a_refused_commit_is_retried_with_the_same_finished_work():
    producer, consumer = FakeProducer(refusals=1), FakeConsumer([P0])
    checkpoint, stats = checkpoint_with([producer], consumer)
    assert checkpoint.ready()
    left = checkpoint.commit(finished_work())
    assert not left, "nothing handed back: nothing reaches the provider twice"
    assert producer.calls.count("abort") == 1 and producer.calls[-1] == "commit"
    assert [tp.offset for tp in producer.committed_offsets[-1]] == [7]
    assert checkpoint.committed == {P0: 7}
    assert (stats.transactions, stats.failed_transactions, stats.committed) == (1, 1, 2)


def test_refused_twice_hands_back_the_work_from_its_first_record():
    producer, consumer = FakeProducer(refusals=2), FakeConsumer([P0])
    clock = Clock()
    checkpoint, stats = checkpoint_with([producer], consumer, clock=clock)
    assert checkpoint.ready()
    left = checkpoint.commit(finished_work())
    assert left.first == {P0: 5} and left.input_count == 2
    assert stats.transactions == 0 and stats.failed_transactions == 2 and checkpoint.committed == {}
    assert not checkpoint.ready(), "a failed commit waits a moment before the next try"
    assert checkpoint.ready(last_chance=True), "but not a partition's last chance"
    clock.now += 1.0
    assert checkpoint.ready()


def test_work_of_a_partition_no_longer_owned_is_not_committed_again():
    producer, consumer = FakeProducer(refusals=1), FakeConsumer([])
    checkpoint, _stats = checkpoint_with([producer], consumer)
    assert checkpoint.ready()
    left = checkpoint.commit(finished_work())
    assert not left, "not ours: nothing to rewind either"
    assert producer.calls.count("commit") == 0


def test_a_broker_that_cannot_initialise_transactions_pauses_commits_without_losing_work():
    producer, consumer = FakeProducer(refusals=0, init_timeouts=2), FakeConsumer([P0])
    clock = Clock()
    checkpoint, stats = checkpoint_with([producer], consumer, clock=clock)
    for _ in range(2):  # the broker is down: not ready, nothing raised
        assert not checkpoint.ready()
        assert not checkpoint.ready(), "tried again only after a moment"
        clock.now += 1.0
    assert producer.calls == []
    assert checkpoint.ready()  # back: the same producer resumes and the finished work commits
    assert not checkpoint.commit(finished_work())
    assert producer.calls[0] == "init" and producer.calls[-1] == "commit"
    assert [tp.offset for tp in producer.committed_offsets[-1]] == [7]
    assert stats.committed == 2


def test_a_forgotten_partitions_committed_offset_is_dropped():
    checkpoint, _stats = checkpoint_with([FakeProducer(refusals=0)], FakeConsumer([P0]))
    assert checkpoint.ready() and not checkpoint.commit(finished_work())
    checkpoint.forget([P0])
    assert checkpoint.committed == {}


@dataclass
class HangingProducer(FakeProducer):
    """send_offsets_to_transaction blocks past its timeout, as librdkafka's does (#5456)."""
    release: threading.Event = field(default_factory=threading.Event)

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self.release.wait(30)


def test_a_send_offsets_blocked_past_its_timeout_drops_the_producer_and_hands_back(monkeypatch):
    monkeypatch.setattr(checkpoint_module, "SEND_OFFSETS_GRACE_S", 0.2)
    hanging, consumer = HangingProducer(refusals=0), FakeConsumer([P0])
    replacement = FakeProducer(refusals=0, init_timeouts=1)
    producers: list[FakeProducer] = [hanging, replacement]
    ids: list[str] = []
    checkpoint, stats = checkpoint_with(producers, consumer, timeout_s=0.1, ids=ids)
    assert checkpoint.ready()
    started = time.monotonic()
    try:
        left = checkpoint.commit(finished_work())
    finally:
        hanging.release.set()
    assert time.monotonic() - started < 5, "the worker waited for the blocked call"
    assert stats.failed_transactions == 1 and stats.transactions == 0
    assert left.first == {P0: 5}, "handed back to be rewound: delivered again"
    assert producers == [], "a new producer was asked for"
    assert ids[0] == ids[1], "with the same transactional.id: its initialisation fences the old one"
    assert "abort" not in hanging.calls, "a fatal error is not aborted on the old producer"
    assert "purge" in hanging.calls, "what the old one still held is never sent"


@dataclass
class TimedProducer(FakeProducer):
    """Notes the timeout each send_offsets_to_transaction was given."""
    timeouts: list[float] = field(default_factory=list)

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self.timeouts.append(timeout)


def test_send_offsets_is_bounded_by_seconds_not_by_the_whole_transaction():
    producer, consumer = TimedProducer(refusals=0), FakeConsumer([P0])
    checkpoint, _stats = checkpoint_with([producer], consumer, timeout_s=10.0)
    assert checkpoint.ready()
    assert not checkpoint.commit(finished_work())
    assert producer.timeouts == [checkpoint_module.SEND_OFFSETS_TIMEOUT_S] and \
        checkpoint_module.SEND_OFFSETS_TIMEOUT_S < 10.0
