"""What the Faust apps commit: past the longest acked run of the records handed over, over
commit markers, and never past a record handed over again after a seek until it is acked."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from herald.infra.read_positions import ReadPositions
from herald.streams.faust_kafka import CommittedReadsConsumer

PARTITION = TP("notifications.status", 0)


def bookkeeping(committed: int | None) -> CommittedReadsConsumer:
    """The consumer's offset bookkeeping alone, without an app or a broker."""
    consumer = object.__new__(CommittedReadsConsumer)
    consumer.read_positions = ReadPositions()
    consumer.handed_over, consumer._held, consumer._done = defaultdict(deque), {}, {}
    consumer._read_offset = defaultdict(lambda: None)
    consumer._acked, consumer._acked_index = defaultdict(list), defaultdict(set)
    consumer._committed_offset = defaultdict(lambda: None, {PARTITION: committed})
    return consumer


def hand_over(consumer: CommittedReadsConsumer, offsets: list[int]) -> None:
    consumer._note_handed_over(PARTITION, offsets)
    consumer.read_positions.handed_over(PARTITION, offsets[-1])


def ack(consumer: CommittedReadsConsumer, *offsets: int) -> None:
    for offset in offsets:  # as Faust's ack does
        consumer._acked_index[PARTITION].add(offset)
        consumer._acked[PARTITION].append(offset)


def commit(consumer: CommittedReadsConsumer) -> int | None:
    offset = consumer._new_offset(PARTITION)
    if offset is not None:
        consumer._committed_offset[PARTITION] = offset
    return offset


def test_markers_between_records_do_not_hold_the_commit():
    consumer = bookkeeping(committed=100)
    hand_over(consumer, [100, 102, 104, 106])  # a marker after each record
    ack(consumer, 100, 102)
    assert commit(consumer) == 103
    ack(consumer, 106)
    assert commit(consumer) is None, "104 is not acked yet"
    ack(consumer, 104)
    assert commit(consumer) == 107


def test_the_position_moves_past_trailing_markers_with_nothing_new_acked():
    consumer = bookkeeping(committed=100)
    hand_over(consumer, [100])
    ack(consumer, 100)
    consumer.read_positions.reached(PARTITION, 102)  # a marker at 101
    assert commit(consumer) == 102


def test_the_commit_never_passes_a_record_fetched_again_after_a_seek_until_it_is_acked():
    """Recovery's seek back lands while Faust works through an earlier batch: 105 and 107
    were taken before the flow resumed (never processed), 109 and later were processed."""
    consumer = bookkeeping(committed=105)
    hand_over(consumer, [105, 107, 109, 111])
    ack(consumer, 109, 111)
    assert commit(consumer) is None
    hand_over(consumer, [105, 107, 109, 111, 113])  # after the seek to the committed offset
    assert list(consumer.handed_over[PARTITION]) == [105, 107, 109, 111, 113]  # new copies replace old
    ack(consumer, 113)
    assert commit(consumer) is None, "105 was never processed: a restart must read it again"
    ack(consumer, 105, 107)
    assert commit(consumer) == 114


def test_a_record_handed_over_twice_and_acked_once_does_not_stall():
    consumer = bookkeeping(committed=None)
    hand_over(consumer, [0, 1, 2])
    ack(consumer, 0, 1, 2)
    assert commit(consumer) == 3
    hand_over(consumer, [1, 2, 3])  # a seek back to 1 after the commit
    ack(consumer, 3)
    assert commit(consumer) == 4


def test_a_record_holding_the_commit_for_a_minute_is_warned_about_once(monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr("herald.streams.faust_kafka.time.monotonic", lambda: clock[0])
    consumer = bookkeeping(committed=100)
    hand_over(consumer, [100, 101])
    ack(consumer, 101)
    for seconds in (0, 30, 61, 90):
        clock[0] = 1000.0 + seconds
        assert commit(consumer) is None
    warnings = [r.getMessage() for r in caplog.records if "commit waits" in r.getMessage()]
    assert warnings == ["notifications.status[0]: the commit waits 61 s for the record at offset 100 "
                        "(read up to None, 1 later records acked)"]
    ack(consumer, 100)
    assert commit(consumer) == 102


def test_a_run_whose_commit_failed_is_committed_next_time():
    consumer = bookkeeping(committed=100)
    hand_over(consumer, [100, 101])
    ack(consumer, 100, 101)
    assert consumer._new_offset(PARTITION) == 102  # and the commit fails: committed stays 100
    assert commit(consumer) == 102


class Fetched:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class SeekingThread:
    def __init__(self) -> None:
        self.seeks: list[dict[TP, int]] = []

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(dict(partitions))


class AckedTopics:
    class topics:
        @staticmethod
        def acks_enabled_for(_topic: str) -> bool:
            return True


def fetching(monkeypatch, consumer: CommittedReadsConsumer, during: Any = None) -> SeekingThread:
    """The consumer's fetches return offsets 5..7 of PARTITION; `during` runs mid-fetch."""
    async def fetch(_self: Any, _active: Any, _timeout: float) -> dict[TP, list[Fetched]]:
        if during is not None:
            await during()
        return {PARTITION: [Fetched(5), Fetched(6), Fetched(7)]}

    monkeypatch.setattr(faust_aiokafka.Consumer, "_getmany", fetch)
    consumer._thread, consumer.app, consumer._seek_epoch = SeekingThread(), AckedTopics(), 0
    return consumer._thread


def test_a_batch_fetched_while_a_seek_runs_is_dropped_and_read_again_after_it(monkeypatch):
    consumer = bookkeeping(committed=3)

    async def seek_runs_meanwhile() -> None:
        consumer._seek_epoch += 1  # perform_seek begins
        asyncio.get_running_loop().call_later(0.05, lambda: setattr(consumer, "_seek_epoch", 2))

    thread = fetching(monkeypatch, consumer, seek_runs_meanwhile)
    assert asyncio.run(consumer._getmany(None, 1.0)) == {}
    assert consumer._seek_epoch == 2, "the batch's seek waited for the running one to end"
    assert thread.seeks == [{PARTITION: 5}], "sought back to the batch's first record"
    assert not consumer.handed_over[PARTITION], "nothing of it was handed over"


def test_a_batch_fetched_between_seeks_is_handed_over(monkeypatch):
    consumer = bookkeeping(committed=3)
    thread = fetching(monkeypatch, consumer)
    records = asyncio.run(consumer._getmany(None, 1.0))
    assert [m.offset for m in records[PARTITION]] == [5, 6, 7] and thread.seeks == []
    assert list(consumer.handed_over[PARTITION]) == [5, 6, 7]


def fetch_loop_consumer() -> CommittedReadsConsumer:
    """What the consumer's `wait_first` needs of it: its service state, without a broker."""
    consumer = object.__new__(CommittedReadsConsumer)
    consumer._loop = asyncio.get_running_loop()
    consumer._stopped, consumer._crashed = asyncio.Event(), asyncio.Event()
    consumer.suspend_flow = asyncio.Event()
    return consumer


def test_a_record_handed_over_at_once_needs_no_race_with_the_flow():
    handed: list[str] = []

    async def on_message(record: str) -> str:
        handed.append(record)
        return "queued"

    async def hand_over_one() -> Any:
        consumer = fetch_loop_consumer()
        tasks_before = len(asyncio.all_tasks())
        results = await consumer.wait_first(on_message("r1"), consumer.suspend_flow.wait())
        return results, len(asyncio.all_tasks()) - tasks_before

    (results, new_tasks) = asyncio.run(hand_over_one())
    assert handed == ["r1"] and list(results.results) == ["queued"] and not results.stopped
    assert new_tasks == 0  # and the flow's wait, never started, was closed (no "never awaited")


def test_a_record_that_waits_for_room_is_handed_over_once_there_is_room():
    async def hand_over_after_room() -> list[str]:
        consumer, room = fetch_loop_consumer(), asyncio.get_running_loop().create_future()
        handed: list[str] = []

        async def on_message(record: str) -> None:
            await room  # a full stream buffer
            handed.append(record)

        waiting = asyncio.ensure_future(consumer.wait_first(on_message("r1"), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert handed == [] and not waiting.done()
        room.set_result(None)
        await asyncio.wait_for(waiting, 1)
        return handed

    assert asyncio.run(hand_over_after_room()) == ["r1"]


def test_a_record_waiting_for_room_is_dropped_when_the_flow_is_suspended():
    async def suspended_while_waiting() -> tuple[list[str], bool]:
        consumer = fetch_loop_consumer()
        never, seen = asyncio.get_running_loop().create_future(), []

        async def on_message(record: str) -> None:
            try:
                await never
            except asyncio.CancelledError:
                seen.append(f"{record} cancelled")
                raise

        waiting = asyncio.ensure_future(consumer.wait_first(on_message("r1"), consumer.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()  # a rebalance: Faust reads the record again after it
        await asyncio.wait_for(waiting, 1)
        await asyncio.sleep(0.01)
        return seen, waiting.done()

    assert asyncio.run(suspended_while_waiting()) == (["r1 cancelled"], True)
