"""Table writes sent to their changelogs in batches, confirmed before the offsets that caused them.

Faust sends each table write as a record of its own: a future, a place in its producer
buffer and an aiokafka `send` per write, the largest part of the missing detector's and the
session reconciler's CPU after their own rules. Here a write goes to the table's store at
once (later events read it) and is kept, per changelog partition and key, until the next
offset commit: the commit first sends what is kept as one Kafka batch per partition (a
later write of a key replaces an earlier one not yet sent) and waits for the broker to
take it. A batch the broker did not take is kept again and that commit is skipped, so an
input offset is never committed before the table writes it caused: after a crash the
inputs are read again and write the same state again (at least once, as Faust's own).

The writes go to the changelog partition of the event being processed, as Faust's own do
(the table is co-partitioned with its inputs).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

Partition = tuple[str, int]
Writes = dict[bytes, bytes | None]  # key -> value, None to delete it


class ChangelogWrites:
    """The table writes not yet confirmed by the broker, by changelog partition."""

    def __init__(self) -> None:
        self._pending: dict[Partition, Writes] = {}
        self._sent: list[tuple[Any, Partition, Writes]] = []  # (delivery future, partition, writes)

    def write(self, table: faust.Table, key: bytes, value: bytes | None) -> None:
        """Store `value` (None: delete the key) in `table` and keep it for its changelog."""
        event = faust.current_event()
        if event is None:
            raise TypeError("a table is written while processing an event, never outside a stream")
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        partition = (table.changelog_topic.get_topic_name(), event.message.partition)
        self._pending.setdefault(partition, {})[key] = value

    @property
    def pending(self) -> int:
        return sum(map(len, self._pending.values()))

    @property
    def idle(self) -> bool:
        """Nothing kept and nothing awaiting the broker."""
        return not self._pending and not self._sent

    def forget(self, partitions: set[int]) -> int:
        """Drop what is kept for these partitions, now another worker's: their inputs were not
        committed past those writes, so that worker reads them again and writes the same state.
        Sent later, a write could land behind that worker's newer ones. Returns how many."""
        dropped = [p for p in self._pending if p[1] in partitions]
        count = sum(len(self._pending.pop(p)) for p in dropped)
        kept = []
        for sent in self._sent:
            if sent[1][1] in partitions:
                count += len(sent[2])
            else:
                kept.append(sent)
        self._sent = kept
        return count

    async def submit(self, producer: AIOKafkaProducer) -> None:
        """Hand what is kept to the producer, one batch per partition (more when one is full)."""
        pending, self._pending = self._pending, {}
        for (topic, partition), writes in pending.items():
            batch, in_batch = producer.create_batch(), {}
            for key, value in writes.items():
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await self._send(producer, batch, (topic, partition), in_batch)
                    batch, in_batch = producer.create_batch(), {}
                    batch.append(key=key, value=value, timestamp=None)
                in_batch[key] = value
            await self._send(producer, batch, (topic, partition), in_batch)

    async def _send(self, producer: AIOKafkaProducer, batch: Any, partition: Partition,
                    writes: Writes) -> None:
        future = await producer.send_batch(batch, partition[0], partition=partition[1])
        self._sent.append((future, partition, writes))

    async def confirm(self, producer: AIOKafkaProducer) -> bool:
        """Everything written so far sent and taken by the broker; False (and kept to be sent
        again) when a batch was not."""
        await self.submit(producer)
        sent, self._sent = self._sent, []
        confirmed = True
        for future, partition, writes in sent:
            try:
                await future
            except KafkaError as exc:
                confirmed = False
                log.warning("%d table write(s) to %s[%d] not taken by the broker, sent again at the "
                            "next commit (%s: %s)", len(writes), *partition, type(exc).__name__, exc)
                newer = self._pending.get(partition, {})
                self._pending[partition] = {**writes, **newer}
        return confirmed


class BatchingProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer, also carrying the app's table writes (`ChangelogWrites`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.changelog = ChangelogWrites()

    async def confirm_changelog(self) -> bool:
        """The table writes so far taken by the broker (see `ChangelogWrites.confirm`)."""
        if self.changelog.idle:
            return True
        return await self.changelog.confirm(self._ensure_producer())

    async def flush(self) -> None:
        if self._producer is not None and self.changelog.pending:
            await self.changelog.submit(self._producer)
        await super().flush()
