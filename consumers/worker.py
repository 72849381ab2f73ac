"""A delivery worker: one member of the consumer group of one topic (a channel's requests or a tier).

- Many records in flight (asyncio, bounded), finishing in any order; a transaction takes
  the finished prefix of each partition (`InFlight`), so a crash never skips a record.
- Consume -> produce -> commit is one Kafka transaction (`Checkpoint`): the outcome records
  (status, retry, DLQ, corrections) and the input offsets commit together or not at all. A
  failed transaction is aborted and its partitions rewound; their records are delivered again and
  the provider drops the repeat by Idempotency-Key.
- A record not yet due (a retry tier) pauses its partition and seeks back to it; the
  partition resumes at the due time, so a retry never runs early.
- A rebalance lets revoked partitions finish (bounded), commits them, and hands the rest
  back. SIGTERM does the same for every partition within the shutdown deadline.
- Committed offsets step over the commit markers of transactional input (the retry tiers are
  written in transactions), so a caught-up group shows lag 0 (`ReadPositions`).

Every call into Kafka runs on one thread of its own (the "kafka" executor), so a rebalance
callback, which librdkafka runs inside poll, never races a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from herald.consumers import event_loop
from herald.consumers.commits import caught_up
from herald.consumers.inflight import Entry, InFlight
from herald.infra.checkpoint import Checkpoint, Partition, Taken
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import fail_on_fatal, fetch_batch, partition_names, seek_back
from herald.infra.read_positions import Owned, ReadPositions, note_fetched
from herald.schemas.catalog import qualified
from herald.schemas.headers import from_kafka
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter

log = logging.getLogger(__name__)
T = TypeVar("T")


class Gate(Protocol):
    """An operator's pause of the worker's channel (`ChannelGate`)."""

    @property
    def paused(self) -> bool: ...


class RecordHandler(Protocol):
    def due_at(self, source: SourceRecord) -> datetime | None: ...

    async def handle(self, source: SourceRecord) -> list[OutgoingRecord]: ...

    async def aclose(self) -> None: ...


@dataclass
class WorkerStats:
    """Countable outcomes of the engine: tests assert these instead of sleeping."""

    consumed: int = 0
    committed: int = 0  # inputs whose offsets a transaction committed
    transactions: int = 0
    failed_transactions: int = 0
    paused_until_due: int = 0
    handed_back: int = 0  # in-flight records given up on a rebalance or shutdown
    consumer_errors: int = 0
    holds: int = 0  # times the worker paused its partitions for an operator's pause of its channel


@dataclass(frozen=True)
class WorkerConfig:
    topic: str  # catalog name of the consumed topic
    namespace: str
    consumer_group: str
    concurrency: int
    commit_interval_s: float = 0.1
    transaction_timeout_s: float = 30.0
    settle_timeout_s: float = 15.0  # revoked partitions' in-flight work may finish this long
    shutdown_timeout_s: float = 15.0
    instance_id: str = ""  # the process's static identity, if it has one (see Checkpoint)


class DeliveryWorker:
    def __init__(self, config: WorkerConfig, consumer: Consumer,
                 new_producer: Callable[[str], Producer], handler: RecordHandler,
                 gate: Gate | None = None) -> None:
        self._config = config
        self._consumer = consumer
        self._handler = handler
        self._inflight = InFlight()
        self._read = ReadPositions()
        self._owned = Owned()  # kept by the rebalance callbacks
        self._tasks: dict[Entry, asyncio.Task[None]] = {}
        self._due: dict[Partition, float] = {}  # paused until this time.time()
        self._gate = gate
        self._held: set[Partition] = set()  # paused while an operator pauses the channel
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._loop: asyncio.AbstractEventLoop | None = None
        # Fetch once a quarter of the slots is free, not after every finished request: each
        # fetch is a hop to the Kafka thread, which cost more than the request's own work.
        self._refill_at = max(1, config.concurrency // 4)
        self._refill: asyncio.Event | None = None  # of the running loop (`_main`)
        self.stats = WorkerStats()
        self.checkpoint = Checkpoint(consumer, new_producer, transactional_prefix=config.consumer_group,
                                     instance_id=config.instance_id, namespace=config.namespace,
                                     transaction_timeout_s=config.transaction_timeout_s, counts=self.stats)

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, stop: threading.Event, drain: bool = False) -> WorkerStats:
        """Deliver until `stop` is set; with `drain`, also stop once nothing is left to read."""
        self._consumer.subscribe([qualified(self._config.topic, self._config.namespace)],
                                 on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        try:
            event_loop.run(self._main(stop, drain))
        finally:
            self._kafka.shutdown(wait=True)
            self._consumer.close()  # leaves the group at once, so siblings take over fast
        return self.stats

    async def _main(self, stop: threading.Event, drain: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._refill = asyncio.Event()
        try:
            await self._deliver_until(stop, drain)
            await self._shutdown()
        finally:
            self._loop = None
            await self._handler.aclose()

    async def _deliver_until(self, stop: threading.Event, drain: bool) -> None:
        next_commit = time.monotonic()
        while not stop.is_set():
            if self._gate is not None and self._gate.paused:
                await self._in_kafka(self._hold)
            elif await self._deliver_some(drain):
                break
            if time.monotonic() >= next_commit:
                await self._in_kafka(self._commit_finished)
                next_commit = time.monotonic() + self._config.commit_interval_s

    async def _deliver_some(self, drain: bool) -> bool:
        """Fetch and start what there is room for; True once drained (with `drain`)."""
        if self._held:
            await self._in_kafka(self._release_held)
        if self._due:  # only the Kafka thread changes it; a glance from here is enough
            await self._in_kafka(self._resume_due)
        room = self._room()
        if room < self._refill_at and self._tasks:
            await self._room_to_refill(0.1)
            return False
        messages = await self._in_kafka(self._fetch, room)
        await self._dispatch(messages)
        return not messages and drain and await self._drained()

    async def _room_to_refill(self, timeout_s: float) -> None:
        """Until enough requests finished to fetch a batch (or the timeout, to commit)."""
        assert self._refill is not None
        self._refill.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._refill.wait()

    def _finished_one(self) -> None:
        if self._refill is not None and self._room() >= self._refill_at:
            self._refill.set()

    def _room(self) -> int:
        return self._config.concurrency - self._inflight.unfinished()

    async def _drained(self) -> bool:
        if self._tasks or len(self._inflight) or self._due:
            return False
        return await self._in_kafka(self._caught_up)

    async def _shutdown(self) -> None:
        """Let in-flight work finish within the deadline, commit it, hand back the rest."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=self._config.shutdown_timeout_s)
        await self._in_kafka(self._commit_finished, None, True)  # a recent failure does not skip it
        self._void(self._inflight.drop())
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _in_kafka(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._kafka, call, *args)

    # -- consuming and dispatching ----------------------------------------------------------

    def _fetch(self, room: int) -> list[Message]:
        """Kafka thread: wait briefly for one record, then take what else is already fetched."""
        messages = fetch_batch(self._consumer, min(room, 500), 0.1)
        note_fetched(self._read, self._consumer, self._owned, messages)
        return messages

    async def _dispatch(self, messages: list[Message]) -> None:
        pauses: dict[Partition, tuple[int, float]] = {}
        for message in messages:
            if (error := message.error()) is not None:
                fail_on_fatal(error)
                self.stats.consumer_errors += 1
                log.warning("consumer error: %s", error)
                continue
            partition = (message.topic(), message.partition())
            if partition in pauses:
                continue  # behind a record that is not due yet: it will be read again
            source = self._source(message)
            due = self._due_time(source)
            if due is not None:
                pauses[partition] = (message.offset(), due)
                continue
            self.stats.consumed += 1
            entry = self._inflight.start(partition, message.offset())
            self._tasks[entry] = asyncio.create_task(self._run(entry, source))
        if pauses:
            await self._in_kafka(self._pause_until_due, pauses)

    def _due_time(self, source: SourceRecord) -> float | None:
        """time.time() at which the record is due, when that is still ahead."""
        due = self._handler.due_at(source)
        if due is None:
            return None
        at = due.timestamp()
        return at if at > time.time() else None

    def _source(self, message: Message) -> SourceRecord:
        _kind, timestamp = message.timestamp()
        return SourceRecord(self._config.topic, message.partition(), message.offset(),
                            message.key(), message.value(), from_kafka(message.headers()),
                            timestamp if timestamp > 0 else None)

    async def _run(self, entry: Entry, source: SourceRecord) -> None:
        try:
            records = await self._handler.handle(source)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug must not stall the partition or crash-loop the worker: dead-letter loudly.
            log.exception("handler failed on %s[%d]@%d", source.topic, source.partition, source.offset)
            records = [dead_letter(source, type(exc).__name__, f"unexpected handler error: {exc!r}",
                                   consumer_group=self._config.consumer_group)]
        finally:
            self._tasks.pop(entry, None)
        self._inflight.finish(entry, records)
        self._finished_one()

    def _void(self, entries: list[Entry]) -> None:
        """Cancel the tasks of entries whose partitions were dropped (thread-safe)."""
        loop = self._loop
        for entry in entries:
            task = self._tasks.get(entry)
            if task is not None and loop is not None:
                loop.call_soon_threadsafe(task.cancel)
        self.stats.handed_back += len(entries)

    # -- the Kafka thread: pause until due, transactions, rebalances -------------------------

    def _pause_until_due(self, pauses: dict[Partition, tuple[int, float]]) -> None:
        for (topic, partition), (offset, due) in pauses.items():
            tp = TopicPartition(topic, partition, offset)
            self._consumer.pause([tp])
            self._consumer.seek(tp)
            self._read.forget([(topic, partition)])
            self._due[(topic, partition)] = due
            self.stats.paused_until_due += 1

    def _hold(self) -> None:
        """Kafka thread, while the channel is paused: every assigned partition paused, and the
        consumer polled, so the group keeps this member; a record fetched before the pause took
        effect is sought back to and read again after the resume."""
        assigned = [(tp.topic, tp.partition) for tp in self._consumer.assignment()]
        newly = [p for p in assigned if p not in self._held]
        if newly:
            if not self._held:
                self.stats.holds += 1
                log.info("%s: channel paused by an operator; holding %s", self._config.consumer_group,
                         sorted(newly))
            self._consumer.pause([TopicPartition(t, p) for t, p in newly])
            self._held.update(newly)
        first: dict[Partition, int] = {}
        for message in self._consumer.consume(500, 0.1):
            if message.error() is None:
                first.setdefault((message.topic(), message.partition()), message.offset())
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))

    def _release_held(self) -> None:
        """Kafka thread: the channel resumed; partitions waiting for a due time stay paused."""
        log.info("%s: channel resumed", self._config.consumer_group)
        self._consumer.resume([TopicPartition(t, p) for t, p in self._held if (t, p) not in self._due])
        self._held.clear()

    def _resume_due(self) -> None:
        now = time.time()
        ready = [p for p, due in self._due.items() if due <= now]
        if ready:
            for partition in ready:
                del self._due[partition]
            self._consumer.resume([TopicPartition(t, p) for t, p in ready])

    def _commit_finished(self, partitions: list[Partition] | None = None, last_chance: bool = False) -> None:
        """Kafka thread: commit the finished work (of `partitions`, or all); what cannot be
        committed is rewound and delivered again (the provider drops the repeats)."""
        if not self.checkpoint.ready(last_chance):
            return
        left = self.checkpoint.commit(self._step_over_markers(self._inflight.take_finished(partitions),
                                                              partitions))
        if left and partitions is None:
            self._rewind(left.first)

    def _step_over_markers(self, taken: Taken, partitions: list[Partition] | None) -> Taken:
        """The finished offsets, and idle partitions' committed ones, moved past the markers that
        follow them: committing "last record + 1" would leave lag 1 on a transactional topic."""
        committed = self.checkpoint.committed
        for partition, offset in committed.items():
            if partitions is None or partition in partitions:
                taken.offsets.setdefault(partition, offset)
        for partition, offset in list(taken.offsets.items()):
            taken.offsets[partition] = self._read.resume_offset(partition, offset)
            if taken.offsets[partition] == committed.get(partition) and partition not in taken.inputs:
                del taken.offsets[partition]  # nothing new for an idle partition
        return taken

    def _rewind(self, first: dict[Partition, int]) -> None:
        log.info("rewinding %s to their first uncommitted offsets", sorted(first.items()))
        self._void(self._inflight.drop(first))
        self._read.forget(first)
        for partition in first:
            self._due.pop(partition, None)
        seek_back(self._consumer, first, log)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: partitions assigned: %s", self._config.consumer_group, partition_names(partitions))
        self._owned.add(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """librdkafka, inside poll or close: finish (bounded) and commit, then let go."""
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        log.info("%s: partitions revoked: %s", self._config.consumer_group, partition_names(partitions))
        deadline = Deadline(self._config.settle_timeout_s)
        while self._inflight.unfinished(revoked) and not deadline.expired():
            time.sleep(0.01)
        self._commit_finished(revoked, last_chance=True)
        self._let_go(revoked, partitions)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Already someone else's: nothing may be committed for them."""
        log.warning("%s: partitions lost (the group moved on without us): %s", self._config.consumer_group,
                    partition_names(partitions))
        self._let_go([(tp.topic, tp.partition) for tp in partitions], partitions)

    def _let_go(self, revoked: list[Partition], partitions: list[TopicPartition]) -> None:
        self._void(self._inflight.drop(revoked))
        self._owned.remove(partitions)
        self._read.forget(revoked)
        self.checkpoint.forget(revoked)
        was_held = any(p in self._held for p in revoked)
        self._held.difference_update(revoked)
        if any(self._due.pop(p, None) is not None for p in revoked) or was_held:
            self._consumer.resume(partitions)  # a pause would outlive the assignment

    def _caught_up(self) -> bool:
        """Kafka thread: every assigned partition read to its end (and, as nothing is in
        flight, committed)."""
        return caught_up(self._consumer)
