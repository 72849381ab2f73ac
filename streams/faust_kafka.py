"""Faust's aiokafka transport, made to read committed records only and to commit past markers.

Faust reads `read_committed` only under its own exactly-once guarantee (a transactional
producer per partition); at least once, it reads every record a transaction wrote, aborted
ones included. Herald's delivery workers write `notifications.status` in transactions and
abort them on failure, so an aborted `sent` would count as delivered (the missing detector
would never alert) and be counted twice by the status stats. Here the worker consumer reads
committed records only, and its committed offsets step over the commit markers after the
last record (`ReadPositions`), so a caught-up group shows lag 0 as Kafka's tools see it.

Which offsets may be committed is decided from the records handed to Faust, not from
Faust's "gaps". Faust notes each jump between offsets it reads (a marker, an aborted or a
compacted record) in an interval tree, merges the tree on every jump, and mixes its
intervals into the acked offsets at each commit. On a topic written in many small
transactions that fell behind for good: the status counter and the missing detector had
committed a third of `notifications.status` after three demo runs, the merging taking
most of their CPU. Here the committable offset is simply past the longest run of records
handed over and acked: an offset never handed over (a marker, an aborted record) needs no
ack.

This reaches into private spots of aiokafka and Faust, pinned by `constraints.txt`:
aiokafka's consumer keeps its isolation level in `_isolation_level` until it starts, a
fetch's positions sit in its subscription state (where Faust's own `_fetch_records` reaches
too), and Faust keeps acked offsets in `_acked`/`_acked_index`. The tests that would break:
`test_missing.py::test_a_sent_status_from_an_aborted_transaction_is_no_delivery` and
`test_status_stats.py` (aborted and repeated outcomes; many small transactions).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections import defaultdict, deque
from collections.abc import Coroutine, Generator, Iterator
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.services import WaitResults

from herald.infra.kafka_io import OFF_PATH_FETCH_MIN_BYTES, OFF_PATH_FETCH_WAIT_MS
from herald.infra.read_positions import ReadPositions
from herald.streams.faust_changelog import BatchingProducer

READ_COMMITTED = "read_committed"
CONSUMER_STOP_S = 4.0  # within the thread's shutdown_timeout, so the thread ends before it is given up
HELD_WARNING_S = 60.0  # a partition's commit held this long by one unacked record is worth a warning

log = logging.getLogger(__name__)


class CommittedReadsThread(faust_aiokafka.AIOKafkaConsumerThread):
    consumer: CommittedReadsConsumer
    # mode waits 60 s for the thread's loop to end; with the broker down, aiokafka's close
    # retries all that time, and a worker told to stop took a minute to exit.
    shutdown_timeout = 5.0

    async def on_thread_stop(self) -> None:
        """The consumer's stop, bounded: with the broker hung (silent, not refusing) aiokafka's
        stop waited on its requests, and the thread, which the interpreter joins at exit, kept
        a stopped worker alive until its exit deadline."""
        try:
            await asyncio.wait_for(super().on_thread_stop(), CONSUMER_STOP_S)
        except TimeoutError:
            log.warning("the consumer did not stop within %.0f s (the broker does not answer): "
                        "leaving without it; the group's next owner resumes from the committed offsets",
                        CONSUMER_STOP_S)

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        return committed_batches(super()._create_worker_consumer(transport))

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: Any,
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        read = self.consumer.read_positions
        for tp, messages in records.items():  # before Faust sees them
            if messages:
                read.handed_over(TP(tp.topic, tp.partition), messages[-1].offset)
        for tp, position in _positions(consumer):
            read.reached(TP(tp.topic, tp.partition), position)
        return records


def committed_batches(consumer: aiokafka.AIOKafkaConsumer) -> aiokafka.AIOKafkaConsumer:
    """`consumer`, not yet started, made to read committed records only, in batches: the
    processors are off a notification's first path, as the indexes are (kafka_io.off_path_fetch).
    aiokafka reads these when the consumer starts."""
    consumer._isolation_level = READ_COMMITTED
    consumer._fetch_max_wait_ms = OFF_PATH_FETCH_WAIT_MS
    consumer._fetch_min_bytes = OFF_PATH_FETCH_MIN_BYTES
    return consumer


class CommittedReadsConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.read_positions = ReadPositions()
        # Per partition, the offsets handed to Faust (of the topics it acks), in order.
        self.handed_over: defaultdict[TP, deque[int]] = defaultdict(deque)
        self._held: dict[TP, tuple[int | None, float, bool]] = {}  # head offset, since, warned
        self._done: dict[TP, int] = {}  # the last offset of the acked run taken
        self._seek_epoch = 0  # odd while a seek to the committed offsets runs
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> CommittedReadsThread:
        return CommittedReadsThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        self._seek_epoch += 1
        try:
            await super().perform_seek()
        finally:
            self._seek_epoch += 1

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Records fetched, none of them from before a seek to the committed offsets.

        Faust's recovery resumes the partitions before it seeks them to their committed
        offsets, so a fetch can run while the seek does, and hand the streams records from the
        old position as their read offsets are reset: after a restart the status counter then
        passed over the record at its committed offset, and its commit stayed there. A batch
        fetched while a seek ran is dropped, never handed over, and once the seek is done its
        partitions are sought back to its first records, so it is read again whole (a fetch
        starts at the position, so nothing before those records is skipped)."""
        epoch = self._seek_epoch
        records = await super()._getmany(active_partitions, timeout)
        if any(records.values()) and (epoch % 2 or epoch != self._seek_epoch):
            log.info("%d record(s) fetched while a seek ran: read again after it",
                     sum(len(m) for m in records.values()))
            while self._seek_epoch % 2:  # the seek's own positions first, then the batch's
                await asyncio.sleep(0.01)
            await self._thread.seek_wait({TP(tp.topic, tp.partition): messages[0].offset
                                          for tp, messages in records.items() if messages})
            return {}
        acked_topic = self.app.topics.acks_enabled_for
        for tp, messages in records.items():
            if messages and acked_topic(tp.topic):  # a table's changelog is never acked
                self._note_handed_over(TP(tp.topic, tp.partition), [m.offset for m in messages])
        return records

    def _note_handed_over(self, tp: TP, offsets: list[int]) -> None:
        """Remember what Faust is handed; after a seek back, the copies fetched again replace
        those fetched before it.

        Recovery's seek back to the committed offset can land while Faust still works through
        a batch fetched before it; Faust then drops the records fetched again up to its read
        offset as already read. A record of that batch that a stream took before its flow
        resumed was never processed nor acked: the commit waits at it (never past it, so a
        restart reads it again), and `_warn_if_held` names it after a minute. Making Faust
        read such records again (resetting its read offset) hung the status counter after a
        kill -9 in one run of four, so it is not done."""
        handed, first = self.handed_over[tp], offsets[0]
        while handed and handed[-1] >= first:
            handed.pop()
        handed.extend(offsets)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Not needed: `_new_offset` passes over offsets that were never handed over."""

    def _new_offset(self, tp: TP) -> int | None:
        """Past the longest run of handed-over records that are acked, then past the markers
        that follow it; also for a partition with nothing newly acked, so an idle one reaches
        lag 0. None when there is nothing new to commit."""
        committed, taken = self._committed_offset[tp], self._done.get(tp)
        # The first offset not known to be done: a run taken before counts, though its commit
        # may have failed.
        floor = max(-1 if committed is None else committed, -1 if taken is None else taken + 1)
        done = self._take_acked_run(tp, floor)
        if done is not None:
            self._done[tp], floor = done, done + 1
        self._warn_if_held(tp)
        if floor < 0:
            return None
        moved = self.read_positions.resume_offset(tp, floor)
        return moved if committed is None or moved > committed else None

    def _warn_if_held(self, tp: TP) -> None:
        """One warning when the same unacked record has held a partition's commit for a minute."""
        handed = self.handed_over[tp]
        head = handed[0] if handed else None
        held = self._held.get(tp)
        if held is None or held[0] != head:
            self._held[tp] = (head, time.monotonic(), False)
        elif head is not None and not held[2] and time.monotonic() - held[1] > HELD_WARNING_S:
            self._held[tp] = (head, held[1], True)
            log.warning("%s[%d]: the commit waits %.0f s for the record at offset %d (read up to %s, "
                        "%d later records acked)", tp.topic, tp.partition, time.monotonic() - held[1], head,
                        self._read_offset[tp], len(self._acked_index[tp]))

    def _take_acked_run(self, tp: TP, floor: int) -> int | None:
        """The last offset of the acked run at the head of what was handed over (and forget it)."""
        handed, acked, done = self.handed_over[tp], self._acked_index[tp], None
        while handed:
            head = handed[0]
            if head < floor:  # handed over again after a seek, or committed already
                handed.popleft()
            elif head in acked:
                handed.popleft()
                acked.discard(head)
                done, floor = head, head + 1
            else:
                break
        if done is not None:
            self._acked[tp] = [offset for offset in self._acked[tp] if offset > done]
        return done

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        """Faust hands each fetched record to its streams as `wait_first(on_message(record),
        suspend_flow.wait())`: four tasks and an `asyncio.wait` per record, a sixth of the
        missing detector's CPU. Here `on_message` runs at once; only when it has to wait (a
        full stream buffer) does the rest of it race the flow's suspension as before."""
        first = coros[0] if len(coros) == 2 and timeout is None else None
        if not inspect.iscoroutine(first) or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        try:
            waiting_on = first.send(None)
        except StopIteration as done:
            _close(coros[1])
            return WaitResults([first], [done.value], False)
        return await super().wait_first(asyncio.ensure_future(_Continue(first, waiting_on)), coros[1])

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        """Committed only once the table writes so far are on the broker (`faust_changelog`)."""
        producer = self.app.producer
        if isinstance(producer, BatchingProducer) and not await producer.confirm_changelog():
            return False  # those inputs are committed at a later commit, after their writes
        return bool(await super()._commit_offsets(offsets, start_new_transaction))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self.handed_over.pop(tp, None)
            self._held.pop(tp, None)
            self._done.pop(tp, None)
        await super().on_partitions_revoked(revoked)  # Faust's producer flush sends what is kept
        producer = self.app.producer
        inputs = {tp.partition for tp in revoked if self.app.topics.acks_enabled_for(tp.topic)}
        dropped = producer.changelog.forget(inputs) if isinstance(producer, BatchingProducer) else 0
        if dropped:
            log.warning("%d table write(s) of revoked partitions %s not confirmed: left to their new "
                        "owner, which reads their inputs again", dropped, sorted(inputs))


class CommittedReadsTransport(faust_aiokafka.Transport):
    Consumer = CommittedReadsConsumer
    Producer = BatchingProducer


def read_committed_only(app: faust.App) -> None:
    """Give `app` the transport above; before anything has used the default one."""
    app.transport = CommittedReadsTransport(app.conf.broker_consumer, app)


class _Continue:
    """Awaitable that goes on with a coroutine already run up to its first wait (`waiting_on`)."""

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro, self._waiting_on = coro, waiting_on

    def __await__(self) -> Generator[Any, None, Any]:
        waiting_on = self._waiting_on
        while True:
            try:
                yield waiting_on  # the task running this waits on it, as it would have for `coro`
            except BaseException as exc:  # cancelled, or the future failed: `coro` sees it
                step = functools.partial(self._coro.throw, exc)
            else:
                step = functools.partial(self._coro.send, None)
            try:
                waiting_on = step()
            except StopIteration as done:
                return done.value


def _close(awaitable: Any) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()  # never started: closed, so it is not reported as never awaited


def _positions(consumer: aiokafka.AIOKafkaConsumer) -> Iterator[tuple[Any, int]]:
    """Each assigned partition's position, where known, without waiting for one."""
    assignment = consumer._subscription.subscription.assignment if consumer._subscription.subscription \
        else None
    for tp in assignment.tps if assignment is not None else ():
        state = assignment.state_value(tp)
        if state.has_valid_position:
            yield tp, state.position
