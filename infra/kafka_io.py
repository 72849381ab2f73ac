"""Thin helpers over confluent-kafka: client configs merged in one fixed order, and
`produce_confirmed`, which returns only when the broker acknowledged every record."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from herald.infra.deadline import Deadline
from herald.infra.read_positions import Owned

# librdkafka's own log lines (connection refused, ...) go through logging, not raw stderr.
RDKAFKA_LOG = logging.getLogger("herald.rdkafka")


class PublishFailed(RuntimeError):
    """The broker did not acknowledge every record before the deadline; nothing is assumed sent."""


# librdkafka backs off reconnecting up to 10 s by default: a broker back after an outage
# would wait that long for its clients.
RECONNECT = {"reconnect.backoff.max.ms": 1000}


def producer_config(bootstrap: str, ack_timeout_s: float, **overrides: Any) -> dict[str, Any]:
    """Defaults, then the caller's overrides: an idempotent producer that waits for all replicas."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOG,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Java's (and aiokafka's, so Faust's) partitioner, not librdkafka's CRC32: a key lands
        # in the same partition whichever client writes it, so topics that the streams join
        # by key stay co-partitioned.
        "partitioner": "murmur2_random",
        # A record not acknowledged within the caller's deadline fails instead of lingering
        # in the queue, so the caller's own retry (from its source of truth) takes over.
        "message.timeout.ms": int(ack_timeout_s * 1000),
        **RECONNECT,
    }
    config.update(overrides)
    return config


def transactional_producer_config(bootstrap: str, transactional_id: str, timeout_s: float,
                                  **overrides: Any) -> dict[str, Any]:
    """A producer for consume-transform-produce transactions that time out after `timeout_s`.

    `retry.backoff.ms` is short because a transaction that begins while the broker still
    writes the previous one's markers is refused (CONCURRENT_TRANSACTIONS) and retried after
    it: at librdkafka's 100 ms, one commit in three at a steady 300 events/s took ~100 ms
    and the router's p99 was 923 ms; at 10 ms its p99 was 21 ms. At 1 ms (librdkafka backs
    off exponentially from there): a router's debug log of one paced demo showed 169 of 693
    transactions refused at AddOffsetsToTxn, each retried 10 ms later. The paced demo's p99
    was 98-119 ms in three runs at 1 ms, 92-237 ms in five at 10 ms (a weak signal, in noise)."""
    return producer_config(bootstrap, timeout_s, **{
        "transactional.id": transactional_id, "transaction.timeout.ms": int(timeout_s * 1000),
        "retry.backoff.ms": 1, **overrides})


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOG,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
        **RECONNECT,
    }
    config.update(overrides)
    return config


# Consumers off a notification's first path (the indexes, corrections, the Faust processors)
# wait for a batch instead of answering each record: at a steady 300 events/s, fetched one
# small batch at a time, they woke for every transaction and took a core between them while
# the router and the delivery workers waited for one.
OFF_PATH_FETCH_WAIT_MS = 200
OFF_PATH_FETCH_MIN_BYTES = 65536


def off_path_fetch() -> dict[str, Any]:
    """Consumer settings for a reader that may lag by OFF_PATH_FETCH_WAIT_MS: the broker holds
    its fetch until that much time passed or OFF_PATH_FETCH_MIN_BYTES are there."""
    return {"fetch.wait.max.ms": OFF_PATH_FETCH_WAIT_MS, "fetch.min.bytes": OFF_PATH_FETCH_MIN_BYTES}


def process_client_id(role: str) -> str:
    """`herald-<role>-<pid>`: the client.id that names a process to the broker, so Kafka's own
    tools (and `client_pid`) tell which process a group member or a request comes from."""
    return f"herald-{role}-{os.getpid()}"


_CLIENT_PID = re.compile(r"^herald-.+-([0-9]+)$")


def client_pid(client_id: str) -> int | None:
    """The pid a `process_client_id` names; None for any other client id."""
    matched = _CLIENT_PID.match(client_id)
    return int(matched.group(1)) if matched else None


def membership_config(session_timeout_s: float, instance_id: str = "", client_id: str = "") -> dict[str, Any]:
    """How a long-lived member of a group shows it is alive, and who it is.

    With `instance_id` it is a static member (KIP-345): restarted under the same id, it is
    given its partitions back at once; a new dynamic member would wait until the group expired
    the dead one it replaced. (After a broker outage the groups still took 10-13 s to assign
    partitions in `herald chaos --scenario broker-stop`: that wait is not the sessions'.)"""
    config: dict[str, Any] = {"session.timeout.ms": int(session_timeout_s * 1000),
                              "heartbeat.interval.ms": min(1000, int(session_timeout_s * 1000) // 3)}
    if instance_id:
        config["group.instance.id"] = instance_id
    if client_id:
        config["client.id"] = client_id  # names the process, so ops (and the bench) find a member's pid
    return config


# Answers while a partition's leadership or a group's coordinator settles; admin results and
# metadata calls do not always flag them retriable.
SETTLING_ERRORS = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                             KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                             KafkaError.COORDINATOR_NOT_AVAILABLE})


def settling(exc: BaseException, also: frozenset[int] = frozenset()) -> bool:
    """Whether `exc` is a Kafka error that passes by itself: retriable, one of SETTLING_ERRORS,
    or one of the caller's `also` codes."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in SETTLING_ERRORS | also)


def fail_on_fatal(error: KafkaError) -> None:
    """Raise a fatal client error (another process joined under our instance id, say): the
    consumer can do nothing more, so its loop must end, not log it forever."""
    # librdkafka hands a fatal error to the consumer as code _FATAL, and confluent-kafka does not
    # always flag that KafkaError fatal(): a fenced consumer then looked like a passing error.
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise KafkaException(error)


def records_only(messages: Iterable[Message]) -> list[Message]:
    """The records among what a consumer returned; an error among them is dropped (librdkafka
    retries and logs it) unless fatal, which is raised."""
    records = []
    for message in messages:
        if (error := message.error()) is None:
            records.append(message)
        else:
            fail_on_fatal(error)
    return records


def partition_names(partitions: Iterable[Any]) -> str:
    """`topic[0,1,2], other[5]`: a rebalance's partitions (anything with .topic and .partition:
    librdkafka's, Faust's), short enough for one log line."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    named = (f"{topic}[{','.join(map(str, sorted(numbers)))}]" for topic, numbers in sorted(by_topic.items()))
    return ", ".join(named) or "none"


def logged_rebalances(logger: logging.Logger, stage: str, owned: Owned) -> dict[str, Any]:
    """Callbacks for `Consumer.subscribe` that log each rebalance (librdkafka applies the
    assignment itself when a callback does not) and keep `owned` up to date."""

    def assigned(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("%s: partitions assigned: %s", stage, partition_names(partitions))
        owned.add(partitions)

    def revoked(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("%s: partitions revoked: %s", stage, partition_names(partitions))
        owned.remove(partitions)

    def lost(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.warning("%s: partitions lost (the group moved on without us): %s", stage,
                       partition_names(partitions))
        owned.remove(partitions)

    return {"on_assign": assigned, "on_revoke": revoked, "on_lost": lost}


# (topic as on the broker, key, value, headers): a plain tuple, as the relay builds one per row
# (3x cheaper than a dataclass).
Record = tuple[str, bytes | None, bytes | None, dict[str, str]]


class ConfirmedSend:
    """Records produced now and confirmed together later, so work can go on while they travel.

    Records are (topic, key, value, headers) tuples: the relay streams plain tuples built
    from its rows, so nothing per record is more than a tuple.
    """

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.produced = 0
        self.acknowledged = 0
        self.errors: list[KafkaError] = []

    def _on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.acknowledged += 1
        else:
            self.errors.append(error)

    def produce(self, records: Iterable[Record]) -> None:
        produce, on_delivery = self._producer.produce, self._on_delivery
        count = 0
        for topic, key, value, headers in records:
            try:
                # Positional value and key: the fastest form of the call; a dict of headers as is.
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            except BufferError:
                self._produce_when_room(topic, key, value, headers)
            count += 1
        self.produced += count

    def _produce_when_room(self, topic: str, key: bytes | None, value: bytes | None,
                           headers: dict[str, str]) -> None:
        """The local queue is full: serve acknowledgments until the record fits.

        Bounded: every queued record is acknowledged or fails within message.timeout.ms.
        """
        while True:
            self._producer.poll(0.1)
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                return
            except BufferError:
                continue

    def wait_acknowledged(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` (sending what lingers now); True once every record produced
        so far was acknowledged or failed."""
        self._producer.flush(timeout_s)
        return self.acknowledged + len(self.errors) >= self.produced

    def confirm(self, deadline: Deadline) -> int:
        """Wait until every record produced is acknowledged; raise PublishFailed otherwise."""
        # Short slices: a stop-aware deadline notices SIGTERM within 0.1 s.
        while self._producer.flush(min(max(deadline.remaining(), 0.01), 0.1)) and not deadline.expired():
            pass
        if self.errors or self.acknowledged != self.produced:
            first = self.errors[0].str() if self.errors else "not acknowledged before the deadline"
            raise PublishFailed(f"{self.produced - self.acknowledged} of {self.produced} records "
                                f"not acknowledged: {first}")
        return self.produced


def produce_confirmed(producer: Producer, records: Iterable[Record], deadline: Deadline) -> int:
    """Produce `records` and wait until each is acknowledged; raise PublishFailed otherwise."""
    send = ConfirmedSend(producer)
    send.produce(records)
    return send.confirm(deadline)


def produce_in_transaction(producer: Producer, records: Iterable[Record]) -> int:
    """Produce `records` into the producer's open transaction, with no callback per record:
    `commit_transaction` fails if any of them failed, so a delivery report says nothing more
    (and serving one cost a Python call per record). Waits for room when the queue is full."""
    produce, count = producer.produce, 0
    for topic, key, value, headers in records:
        while True:
            try:
                produce(topic, value, key, headers=headers)
                break
            except BufferError:
                producer.poll(0.1)  # bounded: queued records are sent or fail within their timeout
        count += 1
    return count


def fetch_batch(consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
    """Wait up to `timeout_s` for one record, then take what else is already fetched (up to
    `max_records` in all): one record alone at a trickle, a full batch from a backlog.
    `consume(n, timeout)` alone would wait for n records or the whole timeout."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]


def seek_back(consumer: Consumer, offsets: Mapping[tuple[str, int], int], logger: logging.Logger) -> None:
    """Seek each (topic, partition) to its offset, to read it again; one no longer assigned is
    left to its new owner, which reads from the committed offset."""
    for (topic, partition), offset in offsets.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            logger.info("not rewinding %s[%d]: %s", topic, partition, exc)
