"""Where an e-ticket's time goes: each hop's p50/p99, from the records' own timestamps.

For every e-ticket of a demo run, four moments, all from this machine's one clock:

- commit: the registration's `status_changed_at`, written in the transaction that verified it;
- event: the Kafka timestamp of its `payment_verified` event (set when the relay produced it);
- request: the Kafka timestamp of the e-ticket's request on its channel's topic (set when the
  router produced it, inside its transaction);
- provider: when the provider simulator accepted the e-ticket (its first acceptance).

So `relay` is commit -> event, `router` is event -> request (the relay's acknowledgement, the
router's fetch, routing), and `delivery` is request -> provider (the router's commit, the delivery
worker's fetch and the provider call). The three add up to the demo's end-to-end latency.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.kafka_io import RDKAFKA_LOG
from herald.schemas import headers as h
from herald.schemas.catalog import notification_topic, qualified
from herald.schemas.ids import notification_id

HOP_NAMES = {"relay": "commit -> event on Kafka (relay)", "router": "event -> request (router)",
             "delivery": "request -> provider (delivery)"}
HOPS = tuple(HOP_NAMES)
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


def hop_latencies(bootstrap: str, namespace: str, channels: Iterable[str], committed_ms: Mapping[str, float],
                  accepted_ms: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Each hop's p50 and p99 in ms over every e-ticket with all four moments known.

    `committed_ms`: registration -> its verifying commit; `accepted_ms`: channel ->
    registration -> the provider's first acceptance of its e-ticket."""
    registrations = set(committed_ms)
    events = read_timestamps(bootstrap, qualified(REGISTRATION_EVENTS, namespace),
                             {r.encode() for r in registrations}, VERIFIED)
    samples: dict[str, list[float]] = {hop: [] for hop in HOPS}
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
    return {hop: summary(values) for hop, values in samples.items() if values}


def p50_p99(values: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile (the one value, when there is one)."""
    p99 = statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]
    return statistics.median(values), p99


def summary(values: list[float]) -> dict[str, Any]:
    p50, p99 = p50_p99(values)
    return {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "samples": len(values)}
