"""A consume-transform-produce checkpoint: finished work and input offsets in one Kafka transaction.

`Checkpoint` owns the worker's transactional producer: it creates it, initialises its
transactions, begins, produces the outcome records, sends the offsets (bounded, see
`send_offsets_bounded`), commits, and on failure aborts or replaces the producer.

One transactional.id per checkpoint. A process with an instance id (a static group member)
keeps it across restarts, so its restarted self aborts the dead one's open transaction when it
initialises, and readers of the outputs wait for nothing; without one, a new process gets a
new id, and a dead process's open transaction is aborted by its timeout.

A producer that fails for good is replaced by one with the same id, whose `init_transactions`
aborts the old one's open transaction and bumps the epoch, fencing whatever the old producer
still has in flight; the old one's queues are purged too. Before, each replacement had a new id
and the old producer lived on, unfenced, with records queued: one `herald chaos --scenario
broker-stop` run ended with a transaction of such a producer open on one partition of a request
topic, unknown to its coordinator (which had aborted the rest of it), and the 277 notifications
behind it never delivered. librdkafka lacks KIP-890's protection against such late records
(librdkafka #5423).

A refused transaction is tried once more with the same finished work, for the partitions still
owned; what is left after that is handed back to the worker, which rewinds it.

Used by the delivery workers and the router. Every method runs on its caller's Kafka thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from herald.infra.kafka_io import produce_in_transaction
from herald.schemas.catalog import qualified
from herald.schemas.records import OutgoingRecord

log = logging.getLogger(__name__)
# send_offsets takes milliseconds (p90 17-21 ms with the two cores full); bounded by the whole
# transaction's timeout, a call hung by librdkafka #5456 after a broker restart held the router
# for 15 s (`herald chaos --scenario broker-stop`: recovery 17.6 s against a 10 s goal).
SEND_OFFSETS_TIMEOUT_S = 3.0
SEND_OFFSETS_GRACE_S = 1.0  # beyond its own timeout, before a blocked send_offsets is given up
RETRY_AFTER_S = 1.0  # after a failed commit or an unready broker, before the next try

Partition = tuple[str, int]  # (topic as on the broker, partition)


@dataclass
class Taken:
    """The finished prefix of some partitions, for one transaction."""

    outcomes: dict[Partition, list[OutgoingRecord]] = field(default_factory=dict)
    offsets: dict[Partition, int] = field(default_factory=dict)  # next offset to consume
    first: dict[Partition, int] = field(default_factory=dict)  # where to rewind if it fails
    inputs: dict[Partition, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.offsets)

    @property
    def records(self) -> list[OutgoingRecord]:
        return [record for records in self.outcomes.values() for record in records]

    @property
    def input_count(self) -> int:
        return sum(self.inputs.values())

    def only(self, partitions: set[Partition]) -> Taken:
        """The part of these partitions (those still owned, after a failed transaction)."""
        return Taken({p: r for p, r in self.outcomes.items() if p in partitions},
                     {p: o for p, o in self.offsets.items() if p in partitions},
                     {p: o for p, o in self.first.items() if p in partitions},
                     {p: n for p, n in self.inputs.items() if p in partitions})


class GroupMember(Protocol):
    """What a checkpoint needs of the consumer: who owns what, in which group generation."""

    def assignment(self) -> list[TopicPartition]: ...

    def consumer_group_metadata(self) -> object: ...


class CommitCounts(Protocol):
    transactions: int
    failed_transactions: int
    committed: int


def send_offsets_bounded(producer: Producer, offsets: list[TopicPartition], group_metadata: object,
                         timeout_s: float) -> None:
    """send_offsets_to_transaction, given up on (as a fatal error) when it outlives its timeout.

    librdkafka ignores that timeout while the group coordinator is down (issue #5456), and
    after a broker restart may never retry it (#5511): `herald chaos --scenario broker-stop`
    saw a worker blocked there for good. The blocked call stays in its daemon thread; the
    caller drops the producer, whose open transaction the broker aborts after
    transaction.timeout.ms, and rewinds its work, which the provider dedupes.
    """
    raised: list[BaseException] = []

    def call() -> None:
        try:
            producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
        except BaseException as exc:  # handed to the caller's thread
            raised.append(exc)

    thread = threading.Thread(target=call, name="send-offsets", daemon=True)
    thread.start()
    thread.join(timeout_s + SEND_OFFSETS_GRACE_S)
    if thread.is_alive():
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"send_offsets_to_transaction blocked past "
                                        f"its {timeout_s:g} s timeout (librdkafka #5456)", fatal=True))
    if raised:
        raise raised[0]


class Checkpoint:
    def __init__(self, consumer: GroupMember, new_producer: Callable[[str], Producer], *,
                 transactional_prefix: str, namespace: str, transaction_timeout_s: float,
                 counts: CommitCounts, instance_id: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._consumer = consumer
        self._new_producer = new_producer  # takes a transactional.id
        self.transactional_id = f"{transactional_prefix}.{instance_id or uuid.uuid4().hex[:12]}"
        self._namespace = namespace
        self._timeout_s = transaction_timeout_s
        self._counts = counts
        self._clock = clock
        self._producer: Producer | None = None  # created, and its transactions initialised, lazily
        self._producer_ready = False
        self._retry_at = 0.0
        self.committed: dict[Partition, int] = {}  # by this member, in partitions it owns

    def ready(self, last_chance: bool = False) -> bool:
        """Whether a commit can be tried now: a producer whose transactions are initialised, and
        no recent failure to wait out (unless this is a partition's last chance). False while the
        broker cannot answer, so an outage pauses commits instead of killing the worker."""
        if not last_chance and self._clock() < self._retry_at:
            return False
        if self._producer_ready:
            return True
        if self._producer is None:
            self._producer = self._new_producer(self.transactional_id)
        try:
            self._producer.init_transactions(self._timeout_s)
        except KafkaException as exc:  # a timeout may be resumed by calling again; anything else: anew
            if exc.args[0].code() != KafkaError._TIMED_OUT:
                self._drop_producer()
            log.warning("transactions not ready, committing later (%s)", exc.args[0].str())
            self._retry_at = self._clock() + RETRY_AFTER_S
            return False
        self._producer_ready = True
        return True

    def commit(self, taken: Taken) -> Taken:
        """Commit `taken` in one transaction, after `ready()`. A refused transaction is aborted
        and tried again, once, for the partitions still owned (a rebalance can refuse offsets of
        a generation that just moved on). Returns the part that could not be committed: empty
        when all went through or the rest is no longer ours; otherwise the caller rewinds it."""
        for attempt in range(2):
            if not taken:
                return taken
            if attempt and not self.ready(last_chance=True):
                break
            try:
                self._transact(taken)
                return Taken()
            except KafkaException as exc:
                self._abort(exc, taken)
            owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            taken = taken.only(owned)
        self._retry_at = self._clock() + RETRY_AFTER_S
        return taken

    def forget(self, partitions: list[Partition]) -> None:
        """Partitions no longer ours: their committed offsets are the next owner's business."""
        for partition in partitions:
            self.committed.pop(partition, None)

    def _transact(self, taken: Taken) -> None:
        producer = self._producer
        assert producer is not None, "commit() before ready()"
        producer.begin_transaction()
        namespace = self._namespace
        produce_in_transaction(producer, ((qualified(r.topic, namespace), r.key, r.value, r.headers)
                                          for r in taken.records))
        offsets = [TopicPartition(t, p, o) for (t, p), o in taken.offsets.items()]
        send_offsets_bounded(producer, offsets, self._consumer.consumer_group_metadata(),
                             min(self._timeout_s, SEND_OFFSETS_TIMEOUT_S))
        producer.commit_transaction(self._timeout_s)
        self.committed.update(taken.offsets)
        self._counts.transactions += 1
        self._counts.committed += taken.input_count

    def _abort(self, exc: KafkaException, taken: Taken) -> None:
        """Abort the failed transaction, or drop the producer (a new one next time) when it cannot."""
        self._counts.failed_transactions += 1
        error = exc.args[0]
        log.warning("transaction of %d input(s) failed (%s)", taken.input_count, error.str())
        if not error.fatal() and self._producer is not None:
            try:
                self._producer.abort_transaction(self._timeout_s)
                return
            except KafkaException:
                pass
        self._drop_producer()

    def _drop_producer(self) -> None:
        """Forget the producer; nothing it still holds is sent later (the next one, with the same
        transactional.id, fences it when it initialises)."""
        producer, self._producer, self._producer_ready = self._producer, None, False
        if producer is not None:
            try:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
            except (KafkaException, RuntimeError) as exc:  # best effort: the epoch bump fences anyway
                log.info("purging the dropped producer failed: %s", exc)
