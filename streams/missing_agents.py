"""The missing-notification detector in Faust: two agents, a timer and a changelogged table.

- `missing-deliveries` re-keys every `sent` status by subject id (statuses are keyed by
  notification id), so deliveries meet the events that expect them in one partition.
- `missing-detector` owns the state: it reads the catalog's event topics, those deliveries
  and deadline checks, all keyed by subject id and co-partitioned, and applies the pure
  rules of `streams.missing` to a table whose changelog Faust keeps (and replays on restart).
- A timer on every worker takes the entries whose deadline passed from an in-memory index
  (written with the table, rebuilt after each recovery) and sends a check keyed by the
  subject: the agent that owns that key re-reads the state and decides. Faust has no
  per-key timer, and its window-close callback is not relied on.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Mapping
from typing import Any

import faust

from herald.schemas.catalog import (
    MISSING_CHECKS,
    MISSING_DELIVERIES,
    NOTIFICATION_STATUS,
    missing_key,
    qualified,
)
from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.event_schemas import event_schema_name
from herald.schemas.headers import from_kafka
from herald.schemas.records import OutgoingRecord
from herald.streams.config import StreamsConfig
from herald.streams.faust_io import RAW_BYTES, RECHECK_AFTER_MS, SEND_FAILURES, JsonTable, Send, header_pairs
from herald.streams.missing import Expectation, Policy, check, delivered, due_ms, expect, needs_check
from herald.streams.rules import event_type_of

log = logging.getLogger(__name__)



class DeadlineIndex:
    """Keys by when they next need a look, earliest first, so a scan touches only those due.

    Every write adds an entry; one made stale by a later write is skipped when it comes up
    (the scan re-reads the state). Rebuilt from the whole table after each recovery.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []

    def note(self, key: str, state: Expectation | None) -> None:
        due = None if state is None else due_ms(state)
        if due is not None:
            self.at(due, key)

    def at(self, when_ms: int, key: str) -> None:
        heapq.heappush(self._heap, (when_ms, key))

    def pop_due(self, now_ms: int) -> list[str]:
        keys: set[str] = set()
        while self._heap and self._heap[0][0] <= now_ms:
            keys.add(heapq.heappop(self._heap)[1])
        return sorted(keys)

    def rebuild(self, states: Mapping[str, Expectation]) -> None:
        self._heap = []
        for key, state in states.items():
            self.note(key, state)


class ExpectationTable(JsonTable[Expectation]):
    """The detector's table, with the index of its deadlines."""

    def __init__(self, table: faust.Table) -> None:
        super().__init__(table, Expectation.from_json)
        self.deadlines = DeadlineIndex()

    def put(self, key: str, state: Expectation | None) -> bool:
        written = super().put(key, state)
        if written and state is not None:
            self.deadlines.note(key, state)
        return written


def add_missing_detector(app: faust.App, config: StreamsConfig, send: Send) -> None:
    """Wire the detector into `app`; `send` produces the records it derives."""
    namespace, policy, catalog = config.namespace, Policy(config.catalog), config.catalog
    # topic as on the broker -> (kind, its schema's name), looked up once, not per record
    kinds = {qualified(catalog.topic_of(kind), namespace): (kind, event_schema_name(catalog, kind))
             for kind in catalog.events}
    deliveries_name = qualified(MISSING_DELIVERIES, namespace)
    checks = app.topic(qualified(MISSING_CHECKS, namespace), **RAW_BYTES)
    deliveries = app.topic(deliveries_name, **RAW_BYTES)
    partitions = next(iter(catalog.events.values())).partitions  # all alike: the catalog checks
    table = ExpectationTable(app.Table("missing-expectations", partitions=partitions, default=None,
                                       key_type=bytes, value_type=bytes))

    @table.on_recover
    async def index_recovered() -> None:
        table.deadlines.rebuild(table)

    @app.agent(app.topic(qualified(NOTIFICATION_STATUS, namespace), **RAW_BYTES), name="missing-deliveries")
    async def rekey_deliveries(stream: faust.StreamT) -> None:
        async for event in stream.events():
            status = _decoded(event.value, "herald.NotificationStatus", event)
            if status is not None and status["status"] == "sent":
                await deliveries.send(key=status["subject_id"].encode(), value=event.value)

    inputs = app.topic(*kinds, deliveries_name, checks.get_topic_name(), **RAW_BYTES)

    @app.agent(inputs, name="missing-detector")
    async def detect(stream: faust.StreamT) -> None:
        async for event in stream.events():
            now_ms = int(time.time() * 1000)
            for record in _apply(table, event, now_ms, policy, kinds, deliveries_name):
                await send(record)

    @app.timer(interval=config.missing_scan_interval_s)
    async def scan_deadlines() -> None:
        now_ms = int(time.time() * 1000)
        due = table.deadlines.pop_due(now_ms)
        for n, key in enumerate(due):
            state = table.get(key)
            if state is not None and needs_check(state, now_ms):
                try:
                    await checks.send(key=state.subject_id.encode(), value=key.encode())
                except SEND_FAILURES as exc:
                    log.warning("deadline checks wait for the broker (%s: %s)", type(exc).__name__, exc)
                    for unsent in due[n:]:
                        table.deadlines.at(now_ms + RECHECK_AFTER_MS, unsent)
                    return
                table.deadlines.at(now_ms + RECHECK_AFTER_MS, key)  # unanswered: asked again


def _apply(table: ExpectationTable, event: faust.EventT, now_ms: int, policy: Policy,
           kinds: dict[str, tuple[str, str]], deliveries_name: str) -> list[OutgoingRecord]:
    """One input of the detector: the table updated, the records to produce returned."""
    topic = event.message.topic
    if topic in kinds:
        _expect(table, event, now_ms, policy, *kinds[topic])
        return []
    if topic == deliveries_name:
        status = _decoded(event.value, "herald.NotificationStatus", event)
        if status is None:
            return []
        key = missing_key(status["subject_id"], status["notification_type"])
        state, records = delivered(table.get(key), status, now_ms)
    else:
        key = event.value.decode()
        state, records = check(table.get(key), now_ms, policy)
    table.put(key, state)
    return records


def _expect(table: ExpectationTable, event: faust.EventT, now_ms: int, policy: Policy, kind: str,
            schema_name: str) -> None:
    record = _decoded(event.value, schema_name, event)
    if record is None:
        return
    event_type = event_type_of(policy.catalog, kind, record, from_kafka(header_pairs(event.headers)))
    if event_type is None:
        return  # the router dead-letters it; nothing is expected of it
    for key, state in expect(table, kind, event_type, record, now_ms, policy).items():
        table.put(key, state)


def _decoded(value: bytes | None, schema_name: str, event: faust.EventT) -> dict[str, Any] | None:
    try:
        return decode_expecting(value, schema_name)
    except UndecodableRecord as exc:
        # The router dead-letters undecodable events, the status counter
        # undecodable statuses (see streams.faust_io): the detector skips them, loudly.
        log.error("missing detector skips %s[%d]@%d: %s", event.message.topic,
                  event.message.partition, event.message.offset, exc)
        return None
