"""Helpers for the delivery tests: requests and sessions put on the topics, workers run in-process."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, Producer

from herald.infra.catalogs import open_catalog
from herald.infra.kafka_io import producer_config
from herald.infra.settings import Settings
from herald.ops.delivery_process import DeliveryProcess
from herald.proving.catalogs import with_concurrency, with_providers, with_retries, write_catalog
from herald.proving.simulators.network import SimulatorNetwork
from herald.schemas import headers as h
from herald.schemas.catalog import (
    NOTIFICATION_STATUS,
    SESSION_EVENTS,
    dead_letter_topic,
    notification_topic,
    qualified,
)
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import decode, encode
from herald.schemas.ids import notification_id
from tests.support import read_topic

# Retries fast enough for a test: tiers from 0.2 s, delays of at most 1 s.
FAST_RETRIES = {"tiers": [0.2, 0.5, 1.0], "base": 0.2, "cap": 1.0, "max_attempts": 30}


def fast_settings(settings: Settings, network: SimulatorNetwork, concurrency: int | None = None,
                  **retries: Any) -> Settings:
    """`settings` with a catalog of their own: the registrations example's, its channels pointed
    at `network` and retrying as FAST_RETRIES (+ `retries`), with `concurrency` if given."""
    changes = [with_providers(network.whatsapp, network.email), with_retries(**{**FAST_RETRIES, **retries})]
    if concurrency is not None:
        changes.append(with_concurrency(concurrency))
    path = settings.home / "test-catalogs" / f"{settings.namespace}-{uuid.uuid4().hex[:6]}.yaml"
    return dataclasses.replace(settings, catalog=write_catalog(path, "registrations", *changes))


def catalog_of(settings: Settings) -> Catalog:
    """The catalog `settings` name, read as a process reads it."""
    return open_catalog(settings.catalog, {})


def request_record(n: int, channel: str, workspace: str = "default") -> dict[str, Any]:
    registration_id = f"REG-{n:05d}"
    return {"notification_id": notification_id(registration_id, "e_ticket", channel),
            "subject_id": registration_id, "notification_type": "e_ticket", "channel": channel,
            "recipient": f"+62812{n:07d}" if channel == "whatsapp" else f"p{n}@example.test",
            "template": "e_ticket", "params": {"name": f"P{n}"}, "source_event_id": f"e-{n}",
            "source_occurred_at": datetime.now(UTC), "workspace_id": workspace}


def produce_requests(settings: Settings, channel: str, numbers: range, *, workspace: str = "default",
                     poison: int = 0, partition: int | None = None) -> list[dict[str, Any]]:
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    topic = qualified(notification_topic(channel), settings.namespace)
    where = {} if partition is None else {"partition": partition}
    requests = [request_record(n, channel, workspace) for n in numbers]
    for n, request in zip(numbers, requests, strict=True):
        producer.produce(topic, key=request["notification_id"].encode(),
                         value=encode("herald.NotificationRequest", request),
                         headers=[(h.CORRELATION_ID, f"corr-{n}".encode()),
                                  (h.TRACEPARENT, h.new_traceparent().encode()),
                                  ("x-upstream", b"kept")], **where)
        if poison and n == numbers[len(numbers) // 2]:  # in the middle of the partition
            for p in range(poison):
                producer.produce(topic, key=f"poison-{p}".encode(), value=b'{"not": "avro"}', **where)
    assert producer.flush(30) == 0
    return requests


def session_on(settings: Settings, network: SimulatorNetwork, session_id: str, workspace: str,
               instance: str) -> None:
    """A connected session: held by the gateway instance, and declared so on sessions.events."""
    network.place_session(instance, session_id)
    publish_session(settings, session_id, workspace, instance)


def publish_session(settings: Settings, session_id: str, workspace: str, instance: str,
                    status: str = "connected") -> None:
    """A SessionEvent straight onto sessions.events, as the relay would publish it."""
    event = {"event_id": str(uuid.uuid4()), "session_id": session_id, "workspace_id": workspace,
             "phone": "+628110000", "status": status, "gateway_instance": instance, "metadata": {},
             "occurred_at": datetime.now(UTC)}
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    producer.produce(qualified(SESSION_EVENTS, settings.namespace), key=session_id.encode(),
                     value=encode("herald.SessionEvent", event))
    assert producer.flush(30) == 0


@contextmanager
def delivering(settings: Settings, channel: str, tiers: tuple[int, ...] | None = None
               ) -> Iterator[dict[str, Any]]:
    """A `herald deliver` process's workers, in this process; the report once they stopped."""
    stop = threading.Event()
    process = DeliveryProcess(settings, catalog_of(settings), settings.kafka_bootstrap, channel, tiers)
    outcome: dict[str, Any] = {"process": process}  # the report too, once the workers stopped
    thread = threading.Thread(target=lambda: outcome.setdefault("report", process.run(stop)))
    thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the workers did not stop within 60 s"


def statuses(settings: Settings, at_least: int = 0) -> list[dict[str, Any]]:
    records = read_topic(settings.kafka_bootstrap, qualified(NOTIFICATION_STATUS, settings.namespace),
                         at_least=at_least)
    return [decode(m.value()).record for m in records]


def latest_statuses(settings: Settings, at_least: int = 0) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for status in statuses(settings, at_least):
        latest[status["notification_id"]] = status
    return latest


def dead_letters(settings: Settings, channel: str, at_least: int) -> list[Message]:
    return read_topic(settings.kafka_bootstrap,
                      qualified(dead_letter_topic(notification_topic(channel)), settings.namespace),
                      at_least=at_least)


def header_dict(message: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in message.headers() or []}
