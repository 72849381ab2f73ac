"""Which gateway instance holds each WhatsApp session: the compacted `sessions.events`, in memory.

Every delivery worker of the whatsapp channel reads the whole topic at start and then
follows it, so choosing where to send issues no database query. A correction the worker
made itself (a session found on another instance) applies at once, before the database's
own event comes back through the outbox.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import RDKAFKA_LOG
from herald.schemas.codec import UndecodableRecord, decode_expecting

log = logging.getLogger(__name__)
_NOT_KNOWN_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


@dataclass(frozen=True)
class KnownSession:
    session_id: str
    workspace_id: str
    status: str
    instance: str | None
    event: dict[str, Any]  # the latest SessionEvent, the base of a correction


class SessionDirectory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, KnownSession] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of sessions.events; a tombstone forgets the session."""
        if value is None:
            if key is not None:
                with self._lock:
                    self._sessions.pop(key.decode(), None)
            return
        try:
            event = decode_expecting(value, "herald.SessionEvent")
        except UndecodableRecord as exc:
            log.error("ignoring an undecodable sessions.events record (key %r): %s", key, exc)
            return
        session = KnownSession(event["session_id"], event["workspace_id"], event["status"],
                               event["gateway_instance"], event)
        with self._lock:
            self._sessions[session.session_id] = session

    def sender_for(self, workspace_id: str) -> KnownSession | None:
        """The workspace's session to send from: a connected one first, lowest id first."""
        with self._lock:
            candidates = [s for s in self._sessions.values() if s.workspace_id == workspace_id]
        candidates.sort(key=lambda s: (s.status != "connected", s.session_id))
        return candidates[0] if candidates else None

    def get(self, session_id: str) -> KnownSession | None:
        with self._lock:
            return self._sessions.get(session_id)

    def moved(self, session_id: str, instance: str) -> None:
        with self._lock:
            known = self._sessions.get(session_id)
            if known is not None:
                self._sessions[session_id] = replace(known, instance=instance, status="connected")

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


class SessionFeed:
    """Reads sessions.events from the beginning into a directory, then follows it."""

    def __init__(self, bootstrap: str, topic: str, directory: SessionDirectory) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG,
                                   "group.id": f"herald-session-feed-{uuid.uuid4().hex[:8]}",
                                   "enable.auto.commit": False, "isolation.level": "read_committed"})
        self._topic = topic
        self.directory = directory
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="session-feed", daemon=True)

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
                        self.directory.apply(message.key(), message.value())
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
