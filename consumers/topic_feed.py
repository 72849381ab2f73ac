"""A topic read from its start into memory, then followed: the gateway session directory and
the channel controls of a delivery process.

Records come in order per partition; the reader keeps no offsets (a group of its own that
never commits) and reads committed records only.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import RDKAFKA_LOG

log = logging.getLogger(__name__)
_NOT_KNOWN_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}
Apply = Callable[[bytes | None, bytes | None], None]  # one record's key and value, in order


class TopicFeed:
    """Reads a topic from the beginning into `apply`, then follows it."""

    def __init__(self, bootstrap: str, topic: str, apply: Apply) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG,
                                   "group.id": f"herald-feed-{uuid.uuid4().hex[:8]}",
                                   "enable.auto.commit": False, "isolation.level": "read_committed"})
        self._topic = topic
        self._apply = apply
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"feed {topic}", daemon=True)

    def start(self, deadline: Deadline) -> None:
        """Begin following; returns once everything the topic held at start is read."""
        partitions = self._ends_when_known(deadline)
        self._consumer.assign(partitions)
        self._thread.start()
        while not self.loaded.wait(0.1):
            if deadline.expired():
                raise TimeoutError(f"{self._topic} was not read to its end in time")

    def _ends_when_known(self, deadline: Deadline) -> list[TopicPartition]:
        """The topic's partitions, and their ends in `_ends`; retried while the broker cannot say
        yet (a topic just created has no leader for a moment: NOT_LEADER_FOR_PARTITION once
        crashed a delivery process at start)."""
        while True:
            try:
                metadata = self._consumer.list_topics(self._topic, timeout=10).topics[self._topic]
                partitions = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
                self._ends = {tp.partition: self._consumer.get_watermark_offsets(tp, timeout=10)[1]
                              for tp in partitions}
                return partitions
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in _NOT_KNOWN_YET) or deadline.expired():
                    raise
                log.info("%s: waiting for the broker (%s)", self._topic, exc.args[0].name())
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        try:
            self._mark_loaded_if_done({})
            seen: dict[int, int] = {}
            while not self._stop.is_set():
                for message in self._consumer.consume(500, 0.2):
                    if message.error() is None:
                        self._apply(message.key(), message.value())
                        seen[message.partition()] = message.offset() + 1
                if not self.loaded.is_set():
                    self._mark_loaded_if_done(seen)
        finally:
            self._consumer.close()

    def _mark_loaded_if_done(self, seen: dict[int, int]) -> None:
        if not self.loaded.is_set() and all(
                end == 0 or seen.get(p, 0) >= end or self._position(p) >= end
                for p, end in self._ends.items()):
            self.loaded.set()

    def _position(self, partition: int) -> int:
        (position,) = self._consumer.position([TopicPartition(self._topic, partition)])
        return int(position.offset)
