"""Per-endpoint back-pressure through a real delivery process (seed 003's retry storm): one
merchant's endpoint answers slowly; the other merchant's deliveries, in the same partition,
do not wait for it, and every delivery still arrives once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from herald.infra.catalogs import open_catalog
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.settings import Settings
from herald.ops.delivery_process import DeliveryProcess
from herald.proving.catalogs import write_catalog
from herald.proving.demo_payments import SECRETS_VARIABLE, new_secret
from herald.proving.simulators.receivers import ReceiverProcess
from herald.schemas import headers as h
from herald.schemas.catalog import notification_topic, qualified, topic_catalog
from herald.schemas.codec import encode
from tests.support import provision

SLOW_MS = 300  # each of the slow merchant's answers
PER_MERCHANT = 20


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    receiver = ReceiverProcess.plan("webhook", tmp_path / "receiver")
    with ProcessGroup(tmp_path / "logs", os.environ) as group:
        receiver.start(group)
        yield receiver


def limited_catalog(path: Path) -> Path:
    """The payments catalog on one partition, 8 requests in flight, 2 per endpoint."""
    def change(document: dict[str, Any]) -> None:
        document["channels"]["merchants"].update(
            partitions=1, concurrency=8, per_endpoint={"in_flight": 2, "wait": "300ms"},
            retry={"tiers": [0.2, 0.5, 1.0], "base": 0.2, "cap": 1.0, "max_attempts": 5})
    return write_catalog(path, "payments", change)


def request(n: int, endpoint: str) -> dict[str, Any]:
    return {"notification_id": f"n-{n:03d}", "subject_id": f"PAY-{n}", "notification_type": "payment_result",
            "channel": "merchants", "recipient": endpoint, "template": "payment_result",
            "params": {"payment_id": f"PAY-{n}"}, "source_event_id": f"e-{n}",
            "source_occurred_at": datetime.now(UTC), "workspace_id": "default",
            "event_type": "payment.succeeded"}


def produce(settings: Settings, requests: list[dict[str, Any]]) -> None:
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    topic = qualified(notification_topic("merchants"), settings.namespace)
    for r in requests:
        producer.produce(topic, key=r["notification_id"].encode(),
                         value=encode("herald.NotificationRequest", r),
                         headers=[(h.CORRELATION_ID, r["notification_id"].encode())])
    assert producer.flush(30) == 0


def test_a_slow_endpoint_does_not_hold_up_another_endpoints_deliveries(settings, receiver, tmp_path):
    key = new_secret()
    catalog = open_catalog(limited_catalog(tmp_path / "catalog.yaml"), {SECRETS_VARIABLE: key})
    provision(settings.kafka_bootstrap, settings.schema_registry_url,
              topic_catalog(catalog, settings.namespace))
    slow = receiver.endpoint("slow", secret=key, latency_ms=SLOW_MS)
    fast = receiver.endpoint("fast", secret=key)
    # Interleaved in one partition, the slow merchant's first: without per-endpoint limits its
    # requests fill every slot and the fast merchant's go at the slow one's pace.
    produce(settings, [request(n, slow if n % 2 == 0 else fast) for n in range(2 * PER_MERCHANT)])
    process = DeliveryProcess(settings, catalog, settings.kafka_bootstrap, "merchants")
    stop, report = threading.Event(), {}
    worker = threading.Thread(target=lambda: report.setdefault("r", process.run(stop)))
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while receiver.accepted() < 2 * PER_MERCHANT and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(60)
    stats = receiver.stats()
    assert {e: (r["accepted"], r["repeats"]) for e, r in stats["by_endpoint"].items()} == {
        "slow": (PER_MERCHANT, 0), "fast": (PER_MERCHANT, 0)}, "every delivery once"
    accepted = receiver.messages()
    slow_at = sorted(m["accepted_at_ms"] for m in accepted if m["endpoint"] == "slow")
    fast_at = sorted(m["accepted_at_ms"] for m in accepted if m["endpoint"] == "fast")
    # The slow merchant takes at least 10 rounds of 300 ms (2 at a time); the fast one's all
    # arrive while it is still at its first few.
    assert fast_at[-1] < slow_at[4], (fast_at[-1] - fast_at[0], slow_at[4] - slow_at[0])
    counts = report["r"].counts.values()
    assert sum(c.deferred for c in counts) > 0, "the slow merchant's overflow was deferred, not queued"
    assert sum(c.dead_lettered for c in counts) == 0
    assert sum(c.by_error_class.get("EndpointBusy", 0) for c in counts) == sum(c.deferred for c in counts)
