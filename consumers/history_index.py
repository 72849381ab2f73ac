"""The history indexer: every request and every outcome of each notification, as rows to search.

`notifications.status` keeps only the latest outcome of a notification once compacted, so the
question operators ask most ("did order 42 get its receipt, and when?") needs the story kept
elsewhere. This consumer reads each channel's request topic (a request, a resend, or a replay
of one from the dead letters), the replays an operator sent to a retry tier (the tiers' other
records are retries, which `notifications.status` tells already) and `notifications.status`
(sent, each retry with its due time, a dead letter) into `notification_history`, one row per
record.

Like the DLQ index it is derived: rows are keyed by their position (topic, partition,
offset) and offsets are committed after the database commit, so a crash indexes a batch
again and changes nothing, and a lost table is rebuilt by reading the topics from the start.
The request topics keep their records, and `notifications.status` every record uncompacted,
for `HISTORY_DAYS`; rows older than the retention are deleted as the indexer runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer, Message
from sqlalchemy.dialects.postgresql import insert

from herald.consumers.commits import consume_in_batches
from herald.consumers.dead_letter_index import jsonable
from herald.infra.deadline import Deadline
from herald.schemas import headers as h
from herald.schemas.catalog import (
    NOTIFICATION_STATUS,
    channel_of_topic,
    delivery_topics,
    qualified,
)
from herald.schemas.codec import UndecodableRecord, decode
from herald.schemas.tables import NotificationHistoryEntry

log = logging.getLogger(__name__)
REQUEST_SCHEMA = "herald.NotificationRequest"
STATUS_SCHEMA = "herald.NotificationStatus"


@dataclass(frozen=True)
class HistoryIndexConfig:
    namespace: str
    topics: tuple[str, ...]  # catalog names: notifications.status, each channel's requests and tiers
    retention_days: float
    purge_interval_s: float = 600.0


@dataclass
class HistoryStats:
    indexed: int = 0
    already_indexed: int = 0  # read again after a crash or a rebalance: left as it was
    skipped: int = 0  # undecodable, or of another schema: nothing to tell
    purged: int = 0  # rows past the retention, deleted


def _when(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _of_request(record: dict[str, Any], headers: Mapping[str, str],
                timestamp_ms: int | None) -> dict[str, Any]:
    replays = headers.get(h.REPLAY_COUNT, "0")
    written = (datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms and timestamp_ms > 0
               else datetime.now(UTC))
    return {"kind": "replayed" if replays.isdigit() and int(replays) > 0 else "requested",
            "recipient": record["recipient"][:400], "event_type": record.get("event_type") or None,
            "event_fields": jsonable(dict(record["params"])), "occurred_at": written}


def _of_status(record: dict[str, Any]) -> dict[str, Any]:
    copied = ("attempts", "error_class", "error", "provider_message_id", "gateway_instance", "occurred_at")
    return {"kind": str(record["status"]), "due_at": _when(record["due_at"]),
            **{name: record[name] for name in copied}}


def history_row(topic: str, partition: int, offset: int, value: bytes | None, headers: Mapping[str, str],
                timestamp_ms: int | None) -> dict[str, Any] | None:
    """The history row of one record (topic as in the catalog), or None when it tells nothing."""
    try:
        decoded = decode(value)
    except UndecodableRecord:
        return None  # the delivery worker dead-letters such a request; the index only reads
    record = decoded.record
    if decoded.schema_name == REQUEST_SCHEMA:
        moment = _of_request(record, headers, timestamp_ms)
        if moment["kind"] != "replayed" and is_retry_tier(topic):
            return None  # a retry: its retry_scheduled outcome is the moment
    elif decoded.schema_name == STATUS_SCHEMA:
        moment = _of_status(record)
    else:
        return None
    empty = dict.fromkeys(("recipient", "event_type", "event_fields", "attempts", "error_class", "error",
                           "provider_message_id", "gateway_instance", "due_at"))
    return {**empty, **moment, "source_topic": topic, "source_partition": partition, "source_offset": offset,
            "notification_id": record["notification_id"], "subject_id": record["subject_id"][:400],
            "notification_type": record["notification_type"], "channel": record["channel"],
            "trace_id": headers.get(h.TRACE_ID) or h.trace_id_of(headers.get(h.TRACEPARENT))}


class HistoryIndexer:
    """Reads the request topics and `notifications.status` into `notification_history` until
    stopped (or, with `drain`, caught up)."""

    def __init__(self, config: HistoryIndexConfig, consumer: Consumer, engine: sa.Engine) -> None:
        self._config = config
        self._consumer = consumer
        self._engine = engine
        self._catalog_names = {qualified(t, config.namespace): t for t in config.topics}
        self._purge_due = Deadline(0.0)
        self._stop = threading.Event()
        self.stats = HistoryStats()

    def run(self, stop: threading.Event, drain: bool = False) -> HistoryStats:
        self._stop = stop
        consume_in_batches(self._consumer, list(self._catalog_names), self._index, stop, name="history index",
                           logger=log, drain=drain, between=self._purge_when_due)
        return self.stats

    def _index(self, messages: list[Message]) -> None:
        rows = [history_row(self._catalog_names[m.topic()], m.partition(), m.offset(), m.value(),
                            h.from_kafka(m.headers()), m.timestamp()[1]) for m in messages]
        kept = [row for row in rows if row is not None]
        self.stats.skipped += len(rows) - len(kept)
        if not kept:
            return
        statement = insert(NotificationHistoryEntry).on_conflict_do_nothing(
            constraint="notification_history_position")
        failures = 0
        while True:  # the database away (a restart): wait with the batch, its offsets uncommitted
            try:
                with self._engine.begin() as conn:
                    inserted = conn.execute(statement.returning(NotificationHistoryEntry.id), kept).all()
                break
            except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                failures += 1
                log.warning("history index: the database does not answer (%s); retrying", type(exc).__name__)
                if self._stop.wait(min(5.0, 0.5 * failures)):
                    raise
        self.stats.indexed += len(inserted)
        self.stats.already_indexed += len(kept) - len(inserted)

    def _purge_when_due(self) -> None:
        if not self._purge_due.expired():
            return
        self._purge_due = Deadline(self._config.purge_interval_s)
        cutoff = datetime.now(UTC) - timedelta(days=self._config.retention_days)
        try:
            with self._engine.begin() as conn:
                purged = conn.execute(sa.delete(NotificationHistoryEntry)
                                      .where(NotificationHistoryEntry.occurred_at < cutoff)).rowcount
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            return  # the database away: the next purge catches up
        self.stats.purged += purged
        if purged:
            log.info("deleted %d history row(s) older than %g days", purged, self._config.retention_days)


def history_topics(channels: tuple[str, ...]) -> tuple[str, ...]:
    """What the indexer reads (catalog names): the status topic, then each channel's requests
    and retry tiers."""
    return (NOTIFICATION_STATUS, *(topic for channel in channels for topic in delivery_topics(channel)))


def is_retry_tier(topic: str) -> bool:
    """Whether `topic` (a catalog name) is one of a channel's retry tiers."""
    channel = channel_of_topic(topic)
    return channel is not None and topic in delivery_topics(channel)[1:]
