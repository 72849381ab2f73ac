"""A catalog written here, never seen by Herald's code: a new event kind, a notification with
an SLA on two channels and one left undelivered. Ingested over the signed API, routed,
delivered, alerted on when late and counted, by real `herald` processes, with no code change."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from herald.infra.catalogs import open_catalog
from herald.infra.processes import ProcessGroup, ServiceError, free_port
from herald.ops.bootstrap import refuse_orphaned_channels
from herald.producers.signing import sign
from herald.schemas.catalog import (
    MISSING_NOTIFICATIONS,
    STATUS_STATS,
    consumer_group,
    notification_topic,
    qualified,
    topic_catalog,
)
from herald.schemas.codec import decode
from tests.catalogs import written_catalog
from tests.integration.delivery_support import produce_requests, session_on
from tests.support import HERALD, process_env, provision, read_topic, simulator_network, wait_until

SECRET = "parcel-secret"
PARCELS = 12
PARCEL_SCHEMA = {
    "type": "record", "name": "ParcelEvent", "namespace": "parcels",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "parcel_id", "type": "string", "maxLength": 40},
        {"name": "state", "type": {"type": "enum", "name": "ParcelState", "symbols": ["shipped", "delayed"]}},
        {"name": "customer", "type": "string"},
        {"name": "phone", "type": "string"},
        {"name": "email", "type": "string"},
        {"name": "weight_kg", "type": "double"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def parcel_catalog(folder: Path, network) -> Path:
    (folder / "parcel_event.avsc").write_text(json.dumps(PARCEL_SCHEMA))
    fast = {"tiers": ["200ms", "500ms", "1s"], "base": "200ms", "cap": "1s", "max_attempts": 30}
    document = {
        "name": "parcels",
        "events": {"parcel": {"schema": "parcel_event.avsc", "key": "parcel_id", "type_field": "state",
                              "types": ["parcel.shipped", "parcel.delayed"]}},
        "notifications": {
            "shipped": {"trigger": ["parcel.shipped"], "template": "parcel_shipped_v2",
                        "channels": {"chat": {"to": "phone"}, "mail": {"to": "email"}},
                        "params": {"customer": "customer", "parcel": "parcel_id", "kg": "weight_kg"},
                        "sla": "2m"},
            # No `herald deliver` runs for the pager: these are late, and alerted on.
            "delay_notice": {"trigger": ["parcel.delayed"], "channels": {"pager": {"to": "email"}},
                             "sla": "3s"},
        },
        "channels": {
            "chat": {"kind": "whatsapp-gateway", "connection": {"instances": list(network.whatsapp)},
                     "partitions": 3, "retry": fast},
            "mail": {"kind": "email", "connection": {"url": network.email}, "partitions": 2, "retry": fast},
            "pager": {"kind": "email", "connection": {"url": network.email}, "partitions": 1},
        },
    }
    path = folder / "parcels.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def post_event(url: str, event_type: str, data: dict) -> None:
    body = json.dumps({"type": event_type, "data": data}).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, body, int(time.time())).as_dict()}
    answer = httpx.post(f"{url}/v1/events", content=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text


def parcel(n: int, state: str) -> dict:
    return {"parcel_id": f"PCL-{n:03d}", "state": state, "customer": f"Customer {n}",
            "phone": f"+62813{n:07d}",
            "email": f"c{n}@example.test", "weight_kg": 1.5, "occurred_at": int(time.time() * 1000)}


def test_a_catalog_herald_never_saw_is_ingested_routed_delivered_alerted_and_counted(
        settings, log_dir, tmp_path):
    with simulator_network(log_dir, gateway_instances=1) as (network, _sims):
        path = parcel_catalog(tmp_path, network)
        catalog = open_catalog(path, {})
        provision(settings.kafka_bootstrap, settings.schema_registry_url,
                  topic_catalog(catalog, settings.namespace))
        configured = dataclasses.replace(settings, catalog=path, ingest_port=free_port(),
                                         ingest_secrets=SECRET, missing_scan_interval_s=0.5)
        session_on(configured, network, "parcels-wa", "default", network.whatsapp[0])
        with ProcessGroup(log_dir, process_env(configured)) as group:
            for name, argv in (("ingest", ["ingest"]), ("relay", ["relay"]), ("router", ["streams"]),
                               ("missing", ["streams", "--processor", "missing"]),
                               ("status", ["streams", "--processor", "status"]),
                               ("deliver-chat", ["deliver", "--channel", "chat"]),
                               ("deliver-mail", ["deliver", "--channel", "mail"])):
                group.start(name, [*HERALD, *argv])
            url = f"http://127.0.0.1:{configured.ingest_port}"
            wait_until(lambda: _answers(f"{url}/healthz"), 60, "the ingest API")
            for n in range(PARCELS):
                post_event(url, "parcel.shipped", parcel(n, "shipped"))
            post_event(url, "parcel.delayed", parcel(99, "delayed"))
            wait_until(lambda: min(network.accepted("whatsapp"), network.accepted("email")) >= PARCELS, 120,
                       "every parcel's notification on both channels")
            missing = qualified(MISSING_NOTIFICATIONS, settings.namespace)
            alerts = read_topic(settings.kafka_bootstrap, missing, at_least=1, timeout_s=60, idle_s=2)
            stats = read_topic(settings.kafka_bootstrap, qualified(STATUS_STATS, settings.namespace),
                               at_least=2, timeout_s=60, idle_s=3)
            requests = read_topic(settings.kafka_bootstrap,
                                  qualified(notification_topic("mail"), settings.namespace), at_least=PARCELS)
            group.check_alive()
        chat, mail = network.messages("whatsapp"), network.messages("email")
    assert Counter(m["subject_id"] for m in chat) == {f"PCL-{n:03d}": 1 for n in range(PARCELS)}
    assert Counter(m["subject_id"] for m in mail) == {f"PCL-{n:03d}": 1 for n in range(PARCELS)}
    assert {m["template"] for m in chat + mail} == {"parcel_shipped_v2"}
    assert {m["to"] for m in mail} == {f"c{n}@example.test" for n in range(PARCELS)}
    (alert,) = [decode(m.value()).record for m in alerts]
    assert (alert["subject_id"], alert["notification_type"], alert["missing_channels"]) == (
        "PCL-099", "delay_notice", ["pager"])
    assert alert["source_event_type"] == "parcel.delayed"
    latest = {m.key(): decode(m.value()).record for m in stats}  # compacted: the latest per key counts
    counted: Counter[tuple[str, str, str]] = Counter()
    for record in latest.values():
        counted[(record["notification_type"], record["channel"], record["status"])] += record["count"]
    assert counted[("shipped", "chat", "sent")] == PARCELS and counted[("shipped", "mail", "sent")] == PARCELS
    for request in (decode(m.value()).record for m in requests):
        n = int(request["subject_id"].removeprefix("PCL-"))
        expected = {"customer": f"Customer {n}", "parcel": request["subject_id"], "kg": "1.5"}
        assert request["params"] == expected


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_renamed_channel_whose_topics_hold_unread_records_is_refused_then_left_once_read(
        settings, tmp_path, caplog):
    produce_requests(settings, "email", range(3))

    def rename_email(document):
        document["channels"]["mail"] = document["channels"].pop("email")
        for notification in document["notifications"].values():
            if "email" in notification["channels"]:
                notification["channels"]["mail"] = notification["channels"].pop("email")
    _path, renamed = written_catalog(tmp_path, rename_email)
    refused = (r"no longer declares channel\(s\) email, whose topics hold records not yet read: "
               rf"{settings.namespace}\.notifications\.email \(3 unread\)")
    with pytest.raises(ServiceError, match=refused):
        refuse_orphaned_channels(settings.kafka_bootstrap, renamed, settings.namespace)
    read_to_the_end(settings, notification_topic("email"))
    with caplog.at_level(logging.WARNING):
        refuse_orphaned_channels(settings.kafka_bootstrap, renamed, settings.namespace)
    assert "no longer declares channel(s) email; their topics hold no unread record" in caplog.text


def read_to_the_end(settings, topic: str) -> None:
    """The channel's delivery group's offsets committed at the end of its request topic."""
    group = consumer_group("deliver", topic, settings.namespace)
    name = qualified(topic, settings.namespace)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
        ends = [TopicPartition(name, p, consumer.get_watermark_offsets(TopicPartition(name, p), 10)[1])
                for p in partitions]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
