"""The Faust router, as its own process, turns each status change into the requests its rule names."""

from __future__ import annotations

import uuid
from collections import Counter

from confluent_kafka import Producer

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup
from herald.schemas import headers as h
from herald.schemas.catalog import dead_letter_topic, notification_topic, qualified
from herald.schemas.codec import decode, encode
from herald.schemas.ids import notification_id
from tests.catalogs import example
from tests.support import HERALD, process_env, read_topic
from tests.unit.test_router import event


def test_router_process_routes_and_dead_letters_poison(settings, log_dir):
    ns = settings.namespace
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    source = qualified(REGISTRATION_EVENTS, ns)
    for n in range(20):
        registration_id = f"REG-{n:02d}"
        for status in ("created", "payment_uploaded", "payment_verified"):
            record = {**event(status, registration_id), "event_id": str(uuid.uuid4())}
            producer.produce(source, key=registration_id.encode(),
                             value=encode("herald.RegistrationEvent", record),
                             headers=[(h.EVENT_ID, b"x"), (h.CORRELATION_ID, f"corr-{n}".encode())])
    # An id no registry gave: far above any this suite's registry hands out.
    producer.produce(source, key=b"REG-poison", value=b"\x00\x77\x35\x94\x00garbage")
    assert producer.flush(30) == 0

    with ProcessGroup(log_dir, process_env(settings)) as group:
        group.start("streams", [*HERALD, "streams"])
        per_channel = {c: read_topic(settings.kafka_bootstrap, qualified(notification_topic(c), ns),
                                     at_least=40, timeout_s=90, idle_s=2) for c in ("whatsapp", "email")}
        dead = read_topic(settings.kafka_bootstrap, qualified(dead_letter_topic(REGISTRATION_EVENTS), ns),
                          at_least=1, timeout_s=30)
        group.check_alive()  # the poison record did not take the worker down

    for channel, records in per_channel.items():
        requests = [decode(m.value()).record for m in records]
        types = [name for name, spec in example().notifications.items() if channel in spec.channels]
        assert Counter((r["subject_id"], r["notification_type"]) for r in requests) == {
            (f"REG-{n:02d}", t): 1 for n in range(20) for t in types}
        for message, request in zip(records, requests, strict=True):
            registration_id = request["subject_id"]
            expected_id = notification_id(registration_id, request["notification_type"], channel)
            assert request["notification_id"] == expected_id
            assert message.key() == request["notification_id"].encode()
            correlation = f"corr-{int(registration_id[4:])}".encode()
            assert dict(message.headers())[h.CORRELATION_ID] == correlation
    assert len(dead) == 1
    reason = dict(dead[0].headers())
    assert dead[0].key() == b"REG-poison"
    assert reason[h.ERROR_CLASS] == b"UndecodableRecord"
    assert reason[h.ERROR_MESSAGE] == b"schema id 2000000000 is unknown to the schema registry"
