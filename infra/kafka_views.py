"""What ops commands read from Kafka: a compacted topic's live entries, and consumer group lag.

Both are bounded by a deadline and fail with KafkaUnavailable naming the broker, so a health
check or a CLI command never hangs on a broker that is down.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import RDKAFKA_LOG


class KafkaUnavailable(RuntimeError):
    """The broker did not answer within the deadline; the message names it."""


@dataclass(frozen=True)
class Entry:
    key: bytes
    value: bytes
    headers: dict[str, str]


def live_entries(bootstrap: str, topic: str, timeout_s: float = 10.0) -> dict[bytes, Entry]:
    """The latest record per key of a compacted topic, tombstoned keys left out: what is open.

    Reads every partition from the start to the end it had when the read began."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"herald-view-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "logger": RDKAFKA_LOG})
    deadline = Deadline(timeout_s)
    try:
        ends = _ends(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        latest: dict[bytes, Entry | None] = {}
        while not _reached(consumer, ends):
            if deadline.expired():
                raise KafkaUnavailable(f"{topic} was not read to its end within {timeout_s:.0f} s")
            for message in consumer.consume(1000, 0.2):
                if message.error() is None and message.key() is not None:
                    value = message.value()
                    latest[message.key()] = None if value is None else Entry(
                        message.key(), value, {k: (v or b"").decode("utf-8", "replace")
                                               for k, v in message.headers() or []})
        return {key: entry for key, entry in latest.items() if entry is not None}
    finally:
        consumer.close()


def _ends(consumer: Consumer, topic: str, deadline: Deadline) -> dict[int, int]:
    try:
        metadata = consumer.list_topics(topic, timeout=max(deadline.remaining(), 0.1))
        partitions = metadata.topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                  timeout=max(deadline.remaining(), 0.1))[1]
                for p in partitions}
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not answer for {topic}: {exc.args[0].str()}") from None


def _reached(consumer: Consumer, ends: dict[int, int]) -> bool:
    positions = consumer.position([TopicPartition(tp.topic, tp.partition) for tp in consumer.assignment()])
    where = {tp.partition: tp.offset for tp in positions}
    return all(end == 0 or where.get(p, -1) >= end for p, end in ends.items())


def consumer_lag(bootstrap: str, group_prefix: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Records not yet consumed, per consumer group whose id starts with `group_prefix`."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout_s)
        groups = sorted(g.group_id for g in listed.valid if g.group_id.startswith(group_prefix))
        lag: dict[str, int] = {}
        for group in groups:
            request = [ConsumerGroupTopicPartitions(group)]
            committed = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group].result(
                timeout_s).topic_partitions
            positions = [tp for tp in committed if tp.offset >= 0]
            if not positions:
                lag[group] = 0
                continue
            ends = admin.list_offsets({TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()
                                       for tp in positions}, request_timeout=timeout_s)
            lag[group] = sum(max(0, ends[TopicPartition(tp.topic, tp.partition)].result(timeout_s).offset
                                 - tp.offset) for tp in positions)
        return lag
    except (KafkaException, TimeoutError) as exc:
        raise KafkaUnavailable(f"Kafka did not answer about consumer groups: {exc}") from None
