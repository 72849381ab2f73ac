"""Where an e-ticket's time goes: each hop's p50/p99, from the records' own timestamps.

For every e-ticket of a demo run, four moments, all from this machine's one clock:

- commit: when the transaction that verified the registration committed (PostgreSQL's commit
  timestamp of the row's writer, `track_commit_timestamp`);
- event: the Kafka timestamp of its `payment_verified` event (set when the relay produced it);
- request: the Kafka timestamp of the e-ticket's request on its channel's topic (set when the
  router produced it, inside its transaction);
- provider: when the provider simulator accepted the e-ticket (its first acceptance).

So `relay` is commit -> event, `router` is event -> request (the relay's acknowledgement, the
router's fetch, routing), and `delivery` is request -> provider (the router's commit, the delivery
worker's fetch and the provider call). The three add up to the demo's end-to-end latency.

A fifth moment splits the delivery hop: when a read_committed consumer beside the pipeline
(`ReadableWatcher`) first had the request, that is, once the router's transaction committed.
`delivery_commit` is request -> readable and `delivery_call` readable -> provider; the two add
up to `delivery`, and they are parts of it, not further hops.

Before the first hop, upstream of Herald: `writer`, from the row's `status_changed_at` (the
writer's clock as it changed the row) to its commit: the writer encoding the event, flushing,
committing. Under load it is milliseconds (p50 5.8, p99 46 ms at 300 events/s on two cores),
which a pipeline that starts at the commit never sees; so it is named, and left out of the end
to end.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Message, TopicPartition

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.kafka_io import RDKAFKA_LOG, fetch_batch
from herald.schemas import headers as h
from herald.schemas.catalog import notification_topic, qualified
from herald.schemas.ids import notification_id

HOP_NAMES = {"relay": "commit -> event on Kafka (relay)", "router": "event -> request (router)",
             "delivery": "request -> provider (delivery)",
             "delivery_commit": "of which request -> readable (the router's commit)",
             "delivery_call": "of which readable -> provider (the worker's fetch, the call)",
             "writer": "before the commit: the writer's change -> its commit (upstream, not counted)"}
HOPS = ("relay", "router", "delivery")
DELIVERY_PARTS = ("delivery_commit", "delivery_call")
WRITER = "writer"
VERIFIED = "registration.payment_verified"


def read_timestamps(bootstrap: str, topic: str, wanted: set[bytes],
                    event_type: str | None = None) -> dict[bytes, float]:
    """Key -> Kafka timestamp (ms) of the first committed record of `topic` with a wanted key
    (and, when given, that event-type header), read from the beginning to the end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-hops", "logger": RDKAFKA_LOG,
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: dict[bytes, float] = {}
        open_partitions = set(partitions)
        while open_partitions:
            for message in consumer.consume(1000, 1.0):
                if message.error() is not None:
                    open_partitions.discard(message.partition())  # end of partition (or an error)
                elif message.key() in wanted and message.key() not in found and _of_type(message, event_type):
                    found[message.key()] = float(message.timestamp()[1])
        return found
    finally:
        consumer.close()


def _of_type(message: Message, event_type: str | None) -> bool:
    if event_type is None:
        return True
    wanted = event_type.encode()
    return any(name == h.EVENT_TYPE and value == wanted for name, value in message.headers() or ())


class ReadableWatcher:
    """When each record of `topics` became readable to a read_committed consumer, by key (its
    first copy), from `start` (the topics' ends by default): the moment a transaction's commit
    made it visible, give or take one fetch; and how late that was after the record's own
    timestamp. Used as a context manager around the records' run."""

    def __init__(self, bootstrap: str, topics: Iterable[str], start: int = OFFSET_END) -> None:
        self.readable_ms: dict[bytes, float] = {}
        self.late_ms: dict[bytes, float] = {}  # readable - the record's timestamp
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG,
                                   "group.id": f"demo-hops-{uuid.uuid4().hex}",  # never joins: assigned
                                   "enable.auto.commit": False, "isolation.level": "read_committed"})
        known = {topic: self._consumer.list_topics(topic, timeout=10).topics[topic] for topic in topics}
        self._consumer.assign([TopicPartition(topic, p, start) for topic, meta in known.items()
                               for p in meta.partitions])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="readable-watcher", daemon=True)

    def __enter__(self) -> ReadableWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for message in fetch_batch(self._consumer, 500, 0.1):  # a record alone is not held back
                if message.error() is None and message.key() not in self.readable_ms:
                    now_ms = time.time() * 1000
                    self.readable_ms[message.key()] = now_ms
                    self.late_ms[message.key()] = now_ms - message.timestamp()[1]


def hop_latencies(bootstrap: str, namespace: str, channels: Iterable[str], committed_ms: Mapping[str, float],
                  accepted_ms: Mapping[str, Mapping[str, float]],
                  readable_ms: Mapping[bytes, float] | None = None,
                  changed_ms: Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Each hop's p50 and p99 in ms over every e-ticket with all four moments known, the
    delivery hop's two parts where `readable_ms` (a `ReadableWatcher`'s) knows the fifth, and
    the writer's part before the commit where `changed_ms` knows when it changed the row.

    `committed_ms`: registration -> its verifying commit; `accepted_ms`: channel ->
    registration -> the provider's first acceptance of its e-ticket."""
    registrations, readable = set(committed_ms), readable_ms or {}
    events = read_timestamps(bootstrap, qualified(REGISTRATION_EVENTS, namespace),
                             {r.encode() for r in registrations}, VERIFIED)
    samples: dict[str, list[float]] = {hop: [] for hop in (WRITER, *HOPS, *DELIVERY_PARTS)}
    if changed_ms is not None:
        samples[WRITER] = [committed_ms[r] - changed_ms[r] for r in registrations if r in changed_ms]
    for channel in channels:
        ids = {notification_id(r, "e_ticket", channel).encode(): r for r in registrations}
        requests = read_timestamps(bootstrap, qualified(notification_topic(channel), namespace), set(ids))
        for key, requested in requests.items():
            registration = ids[key]
            event, accepted = events.get(registration.encode()), accepted_ms[channel].get(registration)
            if event is None or accepted is None:
                continue
            samples["relay"].append(event - committed_ms[registration])
            samples["router"].append(requested - event)
            samples["delivery"].append(accepted - requested)
            if (seen := readable.get(key)) is not None:
                samples["delivery_commit"].append(seen - requested)
                samples["delivery_call"].append(accepted - seen)
    return {hop: summary(values) for hop, values in samples.items() if values}


def p50_p99(values: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile (the one value, when there is one)."""
    p99 = statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]
    return statistics.median(values), p99


def summary(values: list[float]) -> dict[str, Any]:
    p50, p99 = p50_p99(values)
    return {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "samples": len(values)}
