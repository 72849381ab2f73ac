"""Table writes sent in batches per changelog partition, and no input offset committed before
the writes it caused are on the broker (`streams.faust_changelog`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from herald.streams import faust_changelog
from herald.streams.faust_changelog import BatchingProducer, ChangelogWrites
from herald.streams.faust_kafka import CommittedReadsConsumer

CHANGELOG = "herald-missing-missing-expectations-changelog"


class FakeTable:
    """What ChangelogWrites touches of a Faust table: its store and its changelog's name."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: CHANGELOG)


class FakeProducer:
    """aiokafka's batch calls: each batch sent is recorded, and fails while `refusing`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []
        self.refusing = False
        self.batch_limit = 1_000_000

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_limit, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        records = list(getattr(batch, "herald_records", []))
        self.sent.append((topic, partition, records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refusing:
            future.set_exception(KafkaTimeoutError("the broker is away"))
        else:
            future.set_result(None)
        return future


@pytest.fixture
def recorded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each batch remembers what was appended to it (aiokafka's builder keeps only bytes)."""
    append = BatchBuilder.append

    def remembering(self: BatchBuilder, **record: Any) -> Any:
        metadata = append(self, **record)
        if metadata is not None:
            self.herald_records = [*getattr(self, "herald_records", []), (record["key"], record["value"])]
        return metadata

    monkeypatch.setattr(BatchBuilder, "append", remembering)


def processing(monkeypatch: pytest.MonkeyPatch, partition: int) -> None:
    """As if an agent were processing an event of `partition`."""
    event = SimpleNamespace(message=SimpleNamespace(partition=partition))
    monkeypatch.setattr(faust_changelog.faust, "current_event", lambda: event)


def test_writes_reach_the_store_at_once_and_the_changelog_once_per_key_in_one_batch_per_partition(
        monkeypatch, recorded_batches):
    table, writes, producer = FakeTable(), ChangelogWrites(), FakeProducer()
    processing(monkeypatch, 2)
    writes.write(table, b"a", b"1")
    writes.write(table, b"a", b"2")  # replaces the first, not yet sent
    writes.write(table, b"b", b"1")
    processing(monkeypatch, 5)
    writes.write(table, b"c", b"1")
    writes.write(table, b"c", None)  # deleted again
    assert table.data == {b"a": b"2", b"b": b"1"}
    assert writes.pending == 3

    assert asyncio.run(writes.confirm(producer)) is True
    assert producer.sent == [(CHANGELOG, 2, [(b"a", b"2"), (b"b", b"1")]), (CHANGELOG, 5, [(b"c", None)])]
    assert writes.idle


def test_a_batch_the_broker_did_not_take_is_sent_again_and_a_newer_write_of_its_key_wins(
        monkeypatch, recorded_batches):
    table, writes, producer = FakeTable(), ChangelogWrites(), FakeProducer()
    processing(monkeypatch, 0)
    writes.write(table, b"a", b"old")
    writes.write(table, b"b", b"kept")
    producer.refusing = True

    async def refused_then_taken() -> tuple[bool, bool]:
        refused = await writes.confirm(producer)
        writes.write(table, b"a", b"new")  # written while the broker was away
        producer.refusing = False
        return refused, await writes.confirm(producer)

    assert asyncio.run(refused_then_taken()) == (False, True)
    assert producer.sent[-1] == (CHANGELOG, 0, [(b"a", b"new"), (b"b", b"kept")])
    assert writes.idle


def test_writes_over_a_full_batch_go_in_several(monkeypatch, recorded_batches):
    table, writes, producer = FakeTable(), ChangelogWrites(), FakeProducer()
    producer.batch_limit = 300  # bytes: a few records each
    processing(monkeypatch, 1)
    for n in range(40):
        writes.write(table, f"key-{n}".encode(), b"x" * 50)
    assert asyncio.run(writes.confirm(producer))
    sent = [key for _topic, _partition, records in producer.sent for key, _value in records]
    assert len(producer.sent) > 1 and sent == [f"key-{n}".encode() for n in range(40)]


def test_a_write_outside_an_event_is_refused(monkeypatch):
    monkeypatch.setattr(faust_changelog.faust, "current_event", lambda: None)
    with pytest.raises(TypeError, match="while processing an event"):
        ChangelogWrites().write(FakeTable(), b"a", b"1")


def test_no_offset_is_committed_while_table_writes_are_not_on_the_broker(monkeypatch):
    committed: list[Any] = []

    async def faust_commit(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        committed.append(offsets)
        return True

    monkeypatch.setattr(faust_changelog.faust_aiokafka.Consumer, "_commit_offsets", faust_commit)
    confirmed = [False]
    producer = object.__new__(BatchingProducer)

    async def confirm_changelog() -> bool:
        return confirmed[0]

    producer.confirm_changelog = confirm_changelog  # type: ignore[method-assign]
    consumer = object.__new__(CommittedReadsConsumer)
    consumer.app = SimpleNamespace(producer=producer)

    assert asyncio.run(consumer._commit_offsets({"tp": 10})) is False
    assert committed == []
    confirmed[0] = True
    assert asyncio.run(consumer._commit_offsets({"tp": 10})) is True
    assert committed == [{"tp": 10}]


def test_writes_of_partitions_given_to_another_worker_are_dropped_not_sent_late(monkeypatch,
                                                                                recorded_batches):
    table, writes, producer = FakeTable(), ChangelogWrites(), FakeProducer()
    producer.refusing = True
    processing(monkeypatch, 1)
    writes.write(table, b"moved", b"1")
    processing(monkeypatch, 2)
    writes.write(table, b"stays", b"1")

    async def revoked_after_a_refusal() -> tuple[bool, int, bool]:
        refused = await writes.confirm(producer)
        processing(monkeypatch, 1)
        writes.write(table, b"moved-too", b"1")
        dropped = writes.forget({1})
        producer.refusing = False
        return refused, dropped, await writes.confirm(producer)

    assert asyncio.run(revoked_after_a_refusal()) == (False, 2, True)
    assert producer.sent[-1] == (CHANGELOG, 2, [(b"stays", b"1")])
    assert writes.idle
