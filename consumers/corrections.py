"""Applies session corrections to the database, through the outbox, so it stays the source of truth.

A delivery worker that found a session on another gateway instance produces the session's
event with its new instance to `sessions.corrections`. This consumer writes it with
`update_session` (row and event in one transaction), and the event flows back out on
`sessions.events` to every worker's directory. A correction older than the row's last
change is skipped, so a late one never undoes an operator's newer edit. Offsets are
committed after the database commit: a crash applies a batch again, which changes nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from confluent_kafka import Consumer, Message, Producer
from sqlalchemy.orm import Session

from herald.consumers.commits import PendingOffsets
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import produce_confirmed
from herald.producers.models import MessagingSession
from herald.producers.sessions import update_session
from herald.schemas.catalog import SESSION_CORRECTIONS, qualified
from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.headers import CORRELATION_ID, from_kafka
from herald.schemas.records import SourceRecord, dead_letter

log = logging.getLogger(__name__)

CORRECTION_METADATA = ("previous_instance", "corrected_by", "corrected_at")


@dataclass
class CorrectionStats:
    applied: int = 0
    stale: int = 0  # older than the row's last change
    unknown_session: int = 0
    undecodable: int = 0


class CorrectionApplier:
    def __init__(self, consumer: Consumer, producer: Producer, engine: sa.Engine, namespace: str) -> None:
        self._consumer = consumer
        self._producer = producer  # for dead letters only
        self._engine = engine
        self._namespace = namespace
        self._pending = PendingOffsets(consumer)
        self.stats = CorrectionStats()

    def run(self, stop: threading.Event) -> CorrectionStats:
        self._consumer.subscribe([qualified(SESSION_CORRECTIONS, self._namespace)])
        try:
            while not stop.is_set():
                messages = [m for m in self._consumer.consume(200, 0.5) if m.error() is None]
                if messages:
                    self._apply_batch(messages)
                    self._pending.finished(messages)
                if self._pending:
                    self._pending.commit()
        finally:
            self._consumer.close()
        return self.stats

    def _apply_batch(self, messages: list[Message]) -> None:
        dead = []
        with Session(self._engine) as session, session.begin():
            for message in messages:
                source = SourceRecord(SESSION_CORRECTIONS, message.partition(), message.offset(),
                                      message.key(), message.value(), from_kafka(message.headers()))
                try:
                    event = decode_expecting(source.value, "herald.SessionEvent")
                except UndecodableRecord as exc:
                    self.stats.undecodable += 1
                    dead.append(dead_letter(source, "UndecodableRecord", str(exc),
                                            consumer_group="corrections"))
                    continue
                self._apply(session, event, source.headers.get(CORRELATION_ID))
        if dead:  # before the offsets move on: a dead letter is never lost
            produce_confirmed(self._producer, [(qualified(d.topic, self._namespace), d.key, d.value,
                                                d.headers) for d in dead], Deadline(30))

    def _apply(self, session: Session, event: dict[str, object], correlation_id: str | None) -> None:
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
