"""Delivery workers: each request reaches the provider once, failures are reported, kill -9 is survived."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer

from herald.consumers.worker import DeliveryStats
from herald.infra.bootstrap import build_delivery_worker
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.settings import Settings
from herald.schemas import headers as h
from herald.schemas.catalog import NOTIFICATION_STATUS, dead_letter_topic, notification_topic, qualified
from herald.schemas.codec import decode, encode
from herald.schemas.ids import notification_id
from tests.support import HERALD, Simulator, process_env, read_topic, simulators, wait_until

CHANNEL = "whatsapp"


def produce_requests(settings: Settings, count: int, poison: int = 0) -> None:
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    topic = qualified(notification_topic(CHANNEL), settings.namespace)
    for n in range(count):
        registration_id = f"REG-{n:05d}"
        request = {"notification_id": notification_id(registration_id, "e_ticket", CHANNEL),
                   "registration_id": registration_id, "notification_type": "e_ticket", "channel": CHANNEL,
                   "recipient": f"+62812{n:07d}", "participant_name": f"P{n}", "source_event_id": f"e-{n}",
                   "source_occurred_at": datetime.now(UTC)}
        producer.produce(topic, key=request["notification_id"].encode(),
                         value=encode("herald.NotificationRequest", request),
                         headers=[(h.CORRELATION_ID, f"corr-{n}".encode())])
    for n in range(poison):
        producer.produce(topic, key=f"poison-{n}".encode(), value=b"{\"not\": \"avro\"}")
    assert producer.flush(30) == 0


def drain(settings: Settings, simulator: Simulator) -> DeliveryStats:
    configured = dataclasses.replace(settings, whatsapp_url=simulator.url)
    worker = build_delivery_worker(configured, settings.kafka_bootstrap, CHANNEL)
    return worker.run(threading.Event(), drain=True)


def statuses(settings: Settings, at_least: int) -> list[dict]:
    records = read_topic(settings.kafka_bootstrap, qualified(NOTIFICATION_STATUS, settings.namespace),
                         at_least=at_least)
    return [decode(m.value()).record for m in records]


def dead_letters(settings: Settings, at_least: int) -> list:
    return read_topic(settings.kafka_bootstrap,
                      qualified(dead_letter_topic(notification_topic(CHANNEL)), settings.namespace),
                      at_least=at_least)


@pytest.fixture
def simulator(log_dir):
    with simulators(log_dir, CHANNEL) as running:
        yield running[CHANNEL]


def test_each_request_is_delivered_once_and_poison_is_dead_lettered(settings, simulator):
    produce_requests(settings, 50, poison=2)
    stats = drain(settings, simulator)
    assert (stats.sent, stats.failed, stats.undecodable, stats.consumed) == (50, 0, 2, 52)
    sim = simulator.stats()
    assert (sim["accepted"], sim["duplicates"]) == (50, 0)
    sent = statuses(settings, 50)
    assert Counter(s["status"] for s in sent) == {"sent": 50}
    assert all(s["provider_message_id"] for s in sent)
    dead = dead_letters(settings, 2)
    assert sorted(m.key() for m in dead) == [b"poison-0", b"poison-1"]
    assert all(dict(m.headers())[h.ERROR_CLASS] == b"UndecodableRecord" for m in dead)
    assert all(b"magic byte" in dict(m.headers())[h.ERROR_MESSAGE] for m in dead)


def test_transient_provider_failures_are_retried(settings, simulator):
    simulator.faults(fail_next=5, status=503)
    produce_requests(settings, 30)
    stats = drain(settings, simulator)
    assert (stats.sent, stats.failed) == (30, 0)
    sim = simulator.stats()
    assert (sim["accepted"], sim["rejected"], sim["duplicates"]) == (30, 5, 0)
    assert sum(s["attempts"] for s in statuses(settings, 30)) == 35


def test_rejected_request_is_reported_failed_with_its_reason(settings, simulator):
    simulator.faults(fail_next=1, status=422)
    produce_requests(settings, 10)
    stats = drain(settings, simulator)
    assert (stats.sent, stats.failed) == (9, 1)
    failed = [s for s in statuses(settings, 10) if s["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("HTTP 422") and failed[0]["attempts"] == 1
    dead = dead_letters(settings, 1)
    assert dict(dead[0].headers())[h.ERROR_CLASS] == b"ProviderRejected"
    assert dict(dead[0].headers())[h.CORRELATION_ID].startswith(b"corr-")


def test_kill_9_of_a_worker_loses_and_doubles_nothing(settings, simulator, log_dir):
    simulator.faults(latency_ms=15)
    produce_requests(settings, 600)
    env = process_env(settings, whatsapp=simulator)
    with ProcessGroup(log_dir, env) as group:
        victim = group.start("deliver-1", [*HERALD, "deliver", "--channel", CHANNEL])
        group.start("deliver-2", [*HERALD, "deliver", "--channel", CHANNEL])
        wait_until(lambda: simulator.stats()["accepted"] >= 100, 90, "deliveries to be under way")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert simulator.stats()["accepted"] < 600, "the kill must land mid-stream to mean anything"
        sibling = group.processes["deliver-2"]

        def sibling_finished() -> bool:
            assert sibling.poll() is None, f"the sibling exited:\n{group.report()}"
            return simulator.stats()["accepted"] >= 600

        wait_until(sibling_finished, 120, "the sibling to finish the work")
    sim = simulator.stats()
    delivered = Counter(m["registration_id"] for m in simulator.messages())
    assert len(delivered) == 600, "lost"
    assert sim["duplicates"] == 0 and max(delivered.values()) == 1, "doubled"
