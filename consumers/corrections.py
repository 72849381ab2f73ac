"""Applies what Kafka learned about sessions to the database, through the outbox, so it stays
the source of truth: one consumer loop (`CorrectionApplier`) per topic, and what to do with
each record (a `Corrections` handler).

- `InstanceCorrections`: a delivery worker that found a session on another gateway instance
  produces the session's event with its new instance to `sessions.corrections`; it is
  written with `update_session` (row and event in one transaction), and the event flows back
  out on `sessions.events` to every worker's directory. A correction older than the row's
  last change is skipped, so a late one never undoes an operator's newer edit.
- `herald.consumers.mismatches.MismatchCorrections`: the session reconciler's verdicts.

Offsets are committed after the database commit: a crash applies a batch again, which
changes nothing (every handler checks the row before it writes).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from confluent_kafka import Consumer, Message, Producer
from sqlalchemy.orm import Session

from herald.consumers.commits import consume_in_batches
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import produce_confirmed
from herald.producers.sessions import update_session
from herald.schemas.catalog import SESSION_CORRECTIONS, qualified
from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.headers import CORRELATION_ID, from_kafka
from herald.schemas.records import SourceRecord, dead_letter
from herald.schemas.tables import MessagingSession

log = logging.getLogger(__name__)

CORRECTION_METADATA = ("previous_instance", "corrected_by", "corrected_at")


class Corrections(Protocol):
    """What a `CorrectionApplier` does with each record of its topic."""

    topic: str  # catalog name
    schema_name: str
    stats: Any  # a dataclass of counters, with `undecodable`

    def apply(self, session: Session, record: dict[str, Any] | None, key: str,
              correlation_id: str | None) -> None:
        """One record (None: a tombstone) inside the batch's transaction."""

    def after_commit(self) -> None:
        """What must happen outside the transaction, once it committed (e.g. an HTTP call)."""


@dataclass
class CorrectionStats:
    applied: int = 0
    stale: int = 0  # older than the row's last change
    unknown_session: int = 0
    undecodable: int = 0


class CorrectionApplier:
    def __init__(self, consumer: Consumer, producer: Producer, engine: sa.Engine, namespace: str,
                 handler: Corrections) -> None:
        self._consumer = consumer
        self._producer = producer  # for dead letters only
        self._engine = engine
        self._namespace = namespace
        self.handler = handler

    def run(self, stop: threading.Event) -> Any:
        topic = qualified(self.handler.topic, self._namespace)
        consume_in_batches(self._consumer, [topic], self._apply_batch, stop,
                           name=f"corrections {self.handler.topic}", logger=log, batch=200)
        return self.handler.stats

    def _apply_batch(self, messages: list[Message]) -> None:
        dead = []
        topic = self.handler.topic
        with Session(self._engine) as session, session.begin():
            for message in messages:
                source = SourceRecord(topic, message.partition(), message.offset(),
                                      message.key(), message.value(), from_kafka(message.headers()))
                try:
                    record = None if source.value is None else decode_expecting(
                        source.value, self.handler.schema_name)
                except UndecodableRecord as exc:
                    self.handler.stats.undecodable += 1
                    log.warning("dead-lettered %s[%d]@%d (key %r): UndecodableRecord: %s", message.topic(),
                                message.partition(), message.offset(), source.key, exc)
                    dead.append(dead_letter(source, "UndecodableRecord", str(exc),
                                            consumer_group=f"corrections.{topic}"))
                    continue
                key = (source.key or b"").decode("utf-8", "replace")
                self.handler.apply(session, record, key, source.headers.get(CORRELATION_ID))
        self.handler.after_commit()
        if dead:  # before the offsets move on: a dead letter is never lost
            produce_confirmed(self._producer, [(qualified(d.topic, self._namespace), d.key, d.value,
                                                d.headers) for d in dead], Deadline(30))


class InstanceCorrections:
    """sessions.corrections: a session a delivery worker found on another gateway instance."""

    topic = SESSION_CORRECTIONS
    schema_name = "herald.SessionEvent"

    def __init__(self) -> None:
        self.stats = CorrectionStats()

    def apply(self, session: Session, event: dict[str, Any] | None, key: str,
              correlation_id: str | None) -> None:
        if event is None:
            return  # the topic has no tombstones; nothing to undo if one came
        session_id = str(event["session_id"])
        row = session.get(MessagingSession, session_id, with_for_update=True)
        if row is None:
            self.stats.unknown_session += 1
            log.warning("correction for unknown session %s skipped", session_id)
            return
        occurred_at = event["occurred_at"]
        assert isinstance(occurred_at, datetime)
        if occurred_at <= row.updated_at:
            self.stats.stale += 1
            return
        metadata = event["metadata"]
        assert isinstance(metadata, dict)
        update_session(session, session_id, status=str(event["status"]),
                       gateway_instance=event["gateway_instance"],
                       metadata={k: metadata[k] for k in CORRECTION_METADATA if k in metadata},
                       correlation_id=correlation_id)
        self.stats.applied += 1
        log.info("session %s: gateway instance corrected to %s", session_id, event["gateway_instance"])

    def after_commit(self) -> None:
        pass
