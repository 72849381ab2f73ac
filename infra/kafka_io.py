"""Thin helpers over confluent-kafka: client configs merged in one fixed order, and
`produce_confirmed`, which returns only when the broker acknowledged every record."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, Message, Producer

from herald.infra.deadline import Deadline

# librdkafka's own log lines (connection refused, ...) go through logging, not raw stderr.
RDKAFKA_LOG = logging.getLogger("herald.rdkafka")


class PublishFailed(RuntimeError):
    """The broker did not acknowledge every record before the deadline; nothing is assumed sent."""


def producer_config(bootstrap: str, ack_timeout_s: float, **overrides: Any) -> dict[str, Any]:
    """Defaults, then the caller's overrides: an idempotent producer that waits for all replicas."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOG,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # A record not acknowledged within the caller's deadline fails instead of lingering
        # in the queue, so the caller's own retry (from its source of truth) takes over.
        "message.timeout.ms": int(ack_timeout_s * 1000),
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": RDKAFKA_LOG,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "isolation.level": "read_committed",
    }
    config.update(overrides)
    return config


class Outgoing(NamedTuple):  # a tuple: the relay builds one per row, 3x cheaper than a dataclass
    topic: str  # as on the broker (namespace applied)
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


@dataclass
class _Acks:
    errors: list[KafkaError] = field(default_factory=list)
    acknowledged: int = 0

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.acknowledged += 1
        else:
            self.errors.append(error)


def produce_confirmed(producer: Producer, records: Iterable[Outgoing], deadline: Deadline) -> int:
    """Produce `records` and wait until each is acknowledged; raise PublishFailed otherwise."""
    acks = _Acks()
    count = 0
    for record in records:
        producer.produce(record.topic, key=record.key, value=record.value,
                         headers=record.headers,  # a dict: librdkafka takes it as is
                         on_delivery=acks.on_delivery)
        count += 1
    # Short slices: a stop-aware deadline notices SIGTERM within 0.1 s.
    while producer.flush(min(max(deadline.remaining(), 0.01), 0.1)) and not deadline.expired():
        pass
    if acks.errors or acks.acknowledged != count:
        first = acks.errors[0].str() if acks.errors else "not acknowledged before the deadline"
        raise PublishFailed(f"{count - acks.acknowledged} of {count} records not acknowledged: {first}")
    return count
