"""The relay: publishes outbox rows to Kafka in id order, removing them only once acknowledged.

A batch is claimed with FOR UPDATE SKIP LOCKED, published with an idempotent producer
(acks=all), flushed within a deadline, and deleted in the same transaction. If any record
of the batch is not acknowledged, the transaction rolls back and every row stays for the
next attempt: at-least-once, and the `event-id` header lets consumers drop repeats.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import sqlalchemy as sa
from confluent_kafka import Producer
from sqlalchemy.orm import Session

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import Outgoing, PublishFailed, produce_confirmed
from herald.producers.models import OutboxRecord
from herald.schemas.catalog import qualified

log = logging.getLogger(__name__)


def backoff_s(failures: int, base_s: float = 0.5, cap_s: float = 5.0) -> float:
    """Delay before the next attempt after `failures` consecutive failed batches."""
    return min(cap_s, base_s * 2 ** max(0, failures - 1))


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    failed_batches: int = 0
    last_error: str | None = None


class Relay:
    def __init__(
        self, engine: sa.Engine, producer: Producer, *, namespace: str = "",
        batch_size: int = 500, flush_timeout_s: float = 30.0, poll_interval_s: float = 0.2,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._namespace = namespace
        self._batch_size = batch_size
        self._flush_timeout_s = flush_timeout_s
        self._poll_interval_s = poll_interval_s
        self.stats = RelayStats()

    def publish_batch(self) -> int:
        """Publish one batch; returns how many rows it published (0: the outbox is empty)."""
        with Session(self._engine) as session, session.begin():
            rows = session.scalars(
                sa.select(OutboxRecord).order_by(OutboxRecord.id).limit(self._batch_size)
                .with_for_update(skip_locked=True)).all()
            if not rows:
                return 0
            self._publish(rows)
            session.execute(sa.delete(OutboxRecord).where(
                OutboxRecord.id.in_([row.id for row in rows])))
        self.stats.published += len(rows)
        self.stats.batches += 1
        return len(rows)

    def _publish(self, rows: list[OutboxRecord]) -> None:
        records = (Outgoing(qualified(row.topic, self._namespace), row.message_key.encode(),
                            row.payload, row.headers) for row in rows)
        produce_confirmed(self._producer, records, Deadline(self._flush_timeout_s))

    def run(self, stop: threading.Event) -> RelayStats:
        """Publish until `stop` is set; back off while Kafka or the database is unavailable."""
        failures = 0
        while not stop.is_set():
            try:
                published = self.publish_batch()
            except (PublishFailed, sa.exc.OperationalError, BufferError) as exc:
                failures += 1
                self.stats.failed_batches += 1
                self.stats.last_error = str(exc)
                delay = backoff_s(failures)
                log.warning("relay batch failed (%s); rows kept, retrying in %.1fs", exc, delay)
                stop.wait(delay)
                continue
            failures = 0
            if published == 0:
                stop.wait(self._poll_interval_s)
        return self.stats  # nothing is pending: each batch was confirmed inside publish_batch
