"""The DLQ indexer: every dead-letter record becomes a row ops can search, filter and replay.

It is the failed-jobs table, derived: the dead-letter topics stay the record of what
failed, and the index is rebuilt from them if lost. Rows are inserted keyed by their
position (topic, partition, offset) and offsets are committed after the database commit,
so a crash indexes a batch again and changes nothing.

One consumer group reads every dead-letter topic: they are one partition each and carry
little, and one group keeps the index's lag a single figure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer, Message
from sqlalchemy.dialects.postgresql import insert

from herald.consumers.commits import consume_in_batches
from herald.schemas import headers as h
from herald.schemas.catalog import DLQ_INDEX_STAGE, qualified
from herald.schemas.codec import UndecodableRecord, decode
from herald.schemas.tables import DeadLetter

log = logging.getLogger(__name__)

INDEX_STAGE = DLQ_INDEX_STAGE


@dataclass
class IndexStats:
    indexed: int = 0
    already_indexed: int = 0  # read again after a crash or a rebalance: left as it was


def _int_or_none(raw: str | None) -> int | None:
    return int(raw) if raw and raw.lstrip("-").isdigit() else None


def jsonable(value: Any) -> Any:
    """A decoded Avro value as JSON: timestamps as ISO 8601, bytes as hex."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return h.iso(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _decoded(value: bytes | None) -> tuple[str | None, dict[str, Any] | None]:
    try:
        decoded = decode(value)
    except UndecodableRecord:
        return None, None  # poison: its reason is in the error headers already
    return decoded.schema_name, jsonable(decoded.record)


def index_row(dlq_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
              headers: Mapping[str, str], timestamp_ms: int | None) -> dict[str, Any]:
    """The index row of one dead-letter record (topic as in the catalog): headers say why."""
    failed_ms = timestamp_ms if timestamp_ms and timestamp_ms > 0 else None
    key_text = None if key is None else key.decode("utf-8", "backslashreplace")[:400]
    schema_name, payload_json = _decoded(value)
    return {
        "dlq_topic": dlq_topic, "dlq_partition": partition, "dlq_offset": offset,
        "original_topic": headers.get(h.ORIGINAL_TOPIC) or dlq_topic.removesuffix(".dlq"),
        "original_partition": _int_or_none(headers.get(h.ORIGINAL_PARTITION)),
        "original_offset": _int_or_none(headers.get(h.ORIGINAL_OFFSET)),
        "message_key": key, "key_text": key_text, "payload": value, "headers": dict(headers),
        "schema_name": schema_name, "payload_json": payload_json,
        "event_type": headers.get(h.EVENT_TYPE),
        "error_class": (headers.get(h.ERROR_CLASS) or "Unknown")[:200],
        "error_message": headers.get(h.ERROR_MESSAGE, ""),
        "consumer_group": headers.get(h.CONSUMER_GROUP) or None,
        "attempts": _int_or_none(headers.get(h.ATTEMPTS)) or 0,
        "replay_count": _int_or_none(headers.get(h.REPLAY_COUNT)) or 0,
        "trace_id": headers.get(h.TRACE_ID) or h.trace_id_of(headers.get(h.TRACEPARENT)),
        "first_failed_at": h.parse_iso(headers.get(h.FIRST_FAILED_AT)),
        "last_failed_at": (datetime.fromtimestamp(failed_ms / 1000, UTC) if failed_ms
                           else datetime.now(UTC)),
    }


class DeadLetterIndexer:
    """Reads every dead-letter topic into `dead_letters` until stopped (or drained)."""

    def __init__(self, consumer: Consumer, engine: sa.Engine, namespace: str,
                 topics: tuple[str, ...]) -> None:
        self._consumer = consumer
        self._engine = engine
        self._catalog_names = {qualified(t, namespace): t for t in topics}
        self.stats = IndexStats()

    def run(self, stop: threading.Event, drain: bool = False) -> IndexStats:
        consume_in_batches(self._consumer, list(self._catalog_names), self._index, stop, name="dlq index",
                           logger=log, drain=drain)
        return self.stats

    def _index(self, messages: list[Message]) -> None:
        rows = [index_row(self._catalog_names[m.topic()], m.partition(), m.offset(), m.key(), m.value(),
                          h.from_kafka(m.headers()), m.timestamp()[1]) for m in messages]
        statement = insert(DeadLetter).on_conflict_do_nothing(constraint="dead_letters_position")
        with self._engine.begin() as conn:
            inserted = conn.execute(statement.returning(DeadLetter.id), rows).all()
        self.stats.indexed += len(inserted)
        self.stats.already_indexed += len(rows) - len(inserted)
        if inserted:
            log.info("indexed %d dead letter(s)", len(inserted))
