"""The delivery worker of one channel: a member of that channel's consumer group.

Per batch: deliver every record concurrently (bounded), produce each outcome (status, and
the request to the DLQ when it failed), wait until the broker acknowledged them, and only
then commit the batch's offsets. A crash anywhere before the commit redelivers the batch;
the provider drops the repeat by Idempotency-Key, so nothing is lost and nothing doubled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import httpx
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from herald.consumers.commits import PendingOffsets
from herald.consumers.outcomes import failed_records, status_record
from herald.consumers.providers import HttpProvider, Outcome
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import Outgoing, PublishFailed, produce_confirmed
from herald.schemas.catalog import qualified
from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.headers import from_kafka
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter

log = logging.getLogger(__name__)


@dataclass
class DeliveryStats:
    """Countable outcomes: tests assert these instead of sleeping."""

    consumed: int = 0
    sent: int = 0
    failed: int = 0
    undecodable: int = 0
    batches: int = 0
    failed_batches: int = 0
    failed_commits: int = 0  # retried later; a rebalance can refuse a commit


@dataclass(frozen=True)
class WorkerConfig:
    topic: str  # catalog name of the channel's request topic
    namespace: str
    concurrency: int
    max_attempts: int
    ack_timeout_s: float
    batch_size: int = 200


@dataclass(frozen=True)
class PartitionEnd:
    """Where a consumer stands in one partition; negative offsets are librdkafka's "unknown"."""

    position: int
    committed: int
    low: int
    high: int

    def reached(self) -> bool:
        # Before the first fetch the position is unknown; the group resumes from the
        # committed offset, or from the low watermark (auto.offset.reset=earliest).
        start = self.position if self.position >= 0 else self.committed
        return (start if start >= 0 else self.low) >= self.high


def retry_delay_s(attempt: int, base_s: float = 0.2, cap_s: float = 5.0) -> float:
    """In-process pause before attempt `attempt + 1` (retry topics replace this later)."""
    return min(cap_s, base_s * 2 ** (attempt - 1))


class DeliveryWorker:
    def __init__(self, config: WorkerConfig, consumer: Consumer, producer: Producer,
                 client: httpx.AsyncClient, provider: HttpProvider) -> None:
        self._config = config
        self._consumer = consumer
        self._producer = producer
        self._client = client
        self._provider = provider
        self._pending = PendingOffsets(consumer)
        self.stats = DeliveryStats()

    def run(self, stop: threading.Event, drain: bool = False) -> DeliveryStats:
        """Deliver until `stop` is set; with `drain`, also stop once nothing is left to read."""
        self._consumer.subscribe([qualified(self._config.topic, self._config.namespace)])
        try:
            asyncio.run(self._loop(stop, drain))
            self._commit()
        finally:
            self._consumer.close()  # leaves the group at once, so siblings take over fast
        return self.stats

    async def _loop(self, stop: threading.Event, drain: bool) -> None:
        async with self._client:
            while not stop.is_set():
                messages = self._next_batch()
                if messages:
                    await self._handle_batch(messages, stop)
                elif self._pending:
                    self._commit()  # a commit refused during a rebalance, now served by poll
                elif drain and self._caught_up():
                    return

    def _caught_up(self) -> bool:
        """Whether every assigned partition has been read to its end.

        Idle polls are no evidence: while a new broker's group coordinator loads, a member
        holds an assignment but fetches nothing for seconds.
        """
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        positions = self._consumer.position(assignment)
        committed = self._consumer.committed(assignment, timeout=10)
        ends = [PartitionEnd(p.offset, c.offset, *self._consumer.get_watermark_offsets(p, timeout=10))
                for p, c in zip(positions, committed, strict=True)]
        return all(end.reached() for end in ends)

    async def _handle_batch(self, messages: list[Message], stop: threading.Event) -> None:
        semaphore = asyncio.Semaphore(self._config.concurrency)

        async def bounded(message: Message) -> list[OutgoingRecord]:
            async with semaphore:
                return await self._deliver(message)

        results = await asyncio.gather(*(bounded(m) for m in messages))
        outgoing = [Outgoing(qualified(r.topic, self._config.namespace), r.key, r.value, r.headers)
                    for records in results for r in records]
        try:
            produce_confirmed(self._producer, outgoing, Deadline(self._config.ack_timeout_s))
        except PublishFailed as exc:
            self.stats.failed_batches += 1
            log.warning("outcomes not acknowledged (%s); batch will be delivered again", exc)
            self._rewind(messages)
            stop.wait(1.0)
            return
        self._pending.finished(messages)
        self._commit()
        self.stats.consumed += len(messages)
        self.stats.batches += 1

    def _commit(self) -> None:
        if not self._pending.commit():
            self.stats.failed_commits += 1

    async def _deliver(self, message: Message) -> list[OutgoingRecord]:
        source = SourceRecord(self._config.topic, message.partition(), message.offset(),
                              message.key(), message.value(), from_kafka(message.headers()))
        try:
            request = decode_expecting(source.value, "herald.NotificationRequest")
        except UndecodableRecord as exc:
            self.stats.undecodable += 1
            log.error("undecodable record at %s[%d]@%d sent to the DLQ: %s",
                      message.topic(), message.partition(), message.offset(), exc)
            return [dead_letter(source, "UndecodableRecord", str(exc))]
        response, attempts = None, 0
        while attempts < self._config.max_attempts:
            attempts += 1
            response = await self._provider.send(request)
            if response.outcome is not Outcome.RETRYABLE:
                break
            if attempts < self._config.max_attempts:
                await asyncio.sleep(retry_delay_s(attempts))
        assert response is not None
        if response.outcome is Outcome.SENT:
            self.stats.sent += 1
            return [status_record(source, request, status="sent", attempts=attempts,
                                  message_id=response.message_id)]
        self.stats.failed += 1
        error_class = "ProviderRejected" if response.outcome is Outcome.FATAL else "RetriesExhausted"
        return failed_records(source, request, attempts=attempts, error_class=error_class,
                              error=response.error or "unknown provider error")

    def _next_batch(self) -> list[Message]:
        """Wait for one record, then take what else is already fetched without waiting."""
        first = self._consumer.poll(0.5)
        if first is None or not self._is_record(first):
            return []
        rest = self._consumer.consume(self._config.batch_size - 1, 0)
        return [first, *(m for m in rest if self._is_record(m))]

    def _rewind(self, messages: list[Message]) -> None:
        """Seek each partition back to the batch's first record so it is read again."""
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))

    @staticmethod
    def _is_record(message: Message) -> bool:
        if message.error() is None:
            return True
        log.warning("consumer error: %s", message.error())
        return False

