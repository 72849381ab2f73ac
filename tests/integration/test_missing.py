"""The missing-notification detector as its own Faust process: one alert per e-ticket still
missing at its SLA deadline, none for one delivered in time (also when the delivery is read
before the payment it answers), nothing repeated or forgotten across a kill -9, and a
tombstone when a missing one is delivered late; auto-resends reuse the notification id and
stop at their bound."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

from confluent_kafka import Producer

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup
from herald.ops.pipeline import streams_app_id
from herald.proving.catalogs import write_catalog
from herald.proving.demo import wait_for_groups
from herald.schemas.catalog import MISSING_NOTIFICATIONS, NOTIFICATION_STATUS, qualified
from herald.schemas.catalog import notification_topic as channel_topic
from herald.schemas.codec import decode, encode
from herald.schemas.ids import notification_id
from tests.support import HERALD, process_env, read_topic, wait_until
from tests.unit.test_router import event

SLA_S = 8.0  # beyond the worker's start after its group is ready, with room


def with_slas(settings, e_ticket_s: float, resends: int = 0):
    """`settings` with a catalog of their own: the registrations example's, the e-ticket due
    within `e_ticket_s` (resent up to `resends` times), the welcome within an hour."""
    def slas(document):
        document["notifications"]["e_ticket"].update(sla=e_ticket_s, resends=resends)
        document["notifications"]["welcome"]["sla"] = 3600.0
    path = write_catalog(settings.home / "test-catalogs" / f"{settings.namespace}.yaml", "registrations",
                         slas)
    return dataclasses.replace(settings, catalog=path, missing_scan_interval_s=0.5)


def status(registration_id: str, channel: str) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    nid = notification_id(registration_id, "e_ticket", channel)
    record = {"notification_id": nid, "subject_id": registration_id, "notification_type": "e_ticket",
              "channel": channel, "status": "sent", "attempts": 1, "provider_message_id": "m",
              "error": None, "error_class": None, "due_at": None, "gateway_instance": None,
              "source_occurred_at": now, "occurred_at": now}
    return nid.encode(), encode("herald.NotificationStatus", record)


def test_overdue_e_tickets_alert_once_across_a_kill_and_a_late_delivery_resolves(settings, log_dir):
    settings = with_slas(settings, SLA_S)
    ns = settings.namespace
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))

    def registration(registration_id: str, registration_status: str) -> None:
        produce_registration(producer, ns, registration_id, registration_status)

    def delivered(registration_id: str, *channels: str) -> None:
        for channel in channels:
            key, value = status(registration_id, channel)
            producer.produce(qualified(NOTIFICATION_STATUS, ns), value, key)

    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_detector(group, settings, "streams")

        delivered("REG-10", "whatsapp", "email")  # read before the payment it answers
        assert producer.flush(30) == 0
        for n in range(11):
            registration(f"REG-{n:02d}", "payment_verified")
        assert producer.flush(30) == 0
        for n in range(5):
            delivered(f"REG-{n:02d}", "whatsapp", "email")
        delivered("REG-05", "whatsapp")
        delivered("REG-06", "whatsapp")
        assert producer.flush(30) == 0

        topic = qualified(MISSING_NOTIFICATIONS, ns)
        alerts = read_topic(settings.kafka_bootstrap, topic, at_least=5, timeout_s=60, idle_s=SLA_S)
        by_key = {m.key().decode(): decode(m.value()).record for m in alerts}
        assert sorted(m.key().decode() for m in alerts) == [f"REG-{n:02d}|e_ticket" for n in range(5, 10)]
        assert by_key["REG-05|e_ticket"]["missing_channels"] == ["email"]
        assert by_key["REG-09|e_ticket"]["missing_channels"] == ["whatsapp", "email"]
        assert all(a["detected_at"] >= a["deadline"] for a in by_key.values()), "never before the deadline"

        # kill -9 and restart: the table comes back from its changelog, so no alert repeats,
        # and the late delivery below still finds the alert it resolves.
        victim = group.processes["streams"]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        start_detector(group, settings, "streams")
        time.sleep(SLA_S)  # scans of the recovered table, any of which would re-alert
        delivered("REG-05", "email")
        assert producer.flush(30) == 0

        def tombstoned() -> bool:
            return any(m.value() is None for m in read_topic(settings.kafka_bootstrap, topic, idle_s=0.5))

        wait_until(tombstoned, 30, "the late delivery's tombstone")
        group.check_alive()
    records = read_topic(settings.kafka_bootstrap, topic, idle_s=1)
    assert [m.key().decode() for m in records if m.value() is None] == ["REG-05|e_ticket"]
    assert len(records) == 6, "five alerts and one tombstone, nothing repeated"


def test_two_workers_and_a_rebalance_in_between_alert_each_overdue_e_ticket_once(settings, log_dir):
    """Expectations recorded by one worker, half its partitions then moved to a second one
    (which recovers them from the changelog) before the deadline: each alerts exactly once."""
    settings = with_slas(settings, 20.0)
    ns = settings.namespace
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_detector(group, settings, "streams-a")
        registrations = [f"REG-{n:02d}" for n in range(30)]
        for registration_id in registrations:
            produce_registration(producer, ns, registration_id, "payment_verified")
        assert producer.flush(30) == 0

        group.start("streams-b", [*HERALD, "streams", "--processor", "missing"])
        wait_for_groups(settings.kafka_bootstrap, [streams_app_id(settings, "missing")], Deadline(60),
                        group, members=2)
        alerts = read_topic(settings.kafka_bootstrap, qualified(MISSING_NOTIFICATIONS, ns), at_least=30,
                            timeout_s=90, idle_s=5)
        group.check_alive()
    assert Counter(m.key().decode() for m in alerts) == {f"{r}|e_ticket": 1 for r in registrations}


def start_detector(group: ProcessGroup, settings, name: str) -> None:
    """The detector's process, once its group is stable with it as the only member."""
    group.start(name, [*HERALD, "streams", "--processor", "missing"])
    wait_for_groups(settings.kafka_bootstrap, [streams_app_id(settings, "missing")], Deadline(90), group,
                    members=1)


def produce_registration(producer: Producer, namespace: str, registration_id: str, status: str) -> None:
    """A status change happening now, as the relay would publish it."""
    record = {**event(status, registration_id), "event_id": str(uuid.uuid4()),
              "occurred_at": datetime.now(UTC)}
    producer.produce(qualified(REGISTRATION_EVENTS, namespace), encode("herald.RegistrationEvent", record),
                     registration_id.encode())


def test_auto_resend_requests_the_missing_channel_again_with_the_same_id_and_stops_at_the_bound(
        settings, log_dir):
    sla_s = 3.0
    settings = with_slas(settings, sla_s, resends=2)
    ns = settings.namespace
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_detector(group, settings, "streams")
        produce_registration(producer, ns, "REG-R", "payment_verified")
        key, value = status("REG-R", "whatsapp")  # WhatsApp delivered in time; email never
        producer.produce(qualified(NOTIFICATION_STATUS, ns), value, key)
        assert producer.flush(30) == 0
        email = qualified(channel_topic("email"), ns)
        resends = read_topic(settings.kafka_bootstrap, email, at_least=2, timeout_s=60, idle_s=3 * sla_s)
        group.check_alive()
    assert [decode(m.value()).record["notification_id"] for m in resends] == [
        notification_id("REG-R", "e_ticket", "email")] * 2, "two resends, the same id, then no more"
    assert read_topic(settings.kafka_bootstrap, qualified(channel_topic("whatsapp"), ns), idle_s=0.5) == []
    alerts = [decode(m.value()).record for m in
              read_topic(settings.kafka_bootstrap, qualified(MISSING_NOTIFICATIONS, ns), idle_s=0.5)]
    assert [(a["missing_channels"], a["resend_attempts"]) for a in alerts] == [(["email"], 1), (["email"], 2)]


def test_a_sent_status_from_an_aborted_transaction_is_no_delivery(settings, log_dir):
    """A delivery worker's transaction that wrote `sent` and was aborted (its input is delivered
    again): the e-ticket is still missing at its deadline, for the channel it aborted on."""
    settings = with_slas(settings, SLA_S)
    ns = settings.namespace
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    worker = Producer(producer_config(settings.kafka_bootstrap, 30, **{"transactional.id": f"{ns}-worker"}))
    worker.init_transactions(30)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_detector(group, settings, "streams")
        produce_registration(producer, ns, "REG-A", "payment_verified")
        assert producer.flush(30) == 0
        for channel, commit in (("whatsapp", True), ("email", False)):
            worker.begin_transaction()
            key, value = status("REG-A", channel)
            worker.produce(qualified(NOTIFICATION_STATUS, ns), value, key)
            worker.commit_transaction(30) if commit else worker.abort_transaction(30)
        alerts = read_topic(settings.kafka_bootstrap, qualified(MISSING_NOTIFICATIONS, ns), at_least=1,
                            timeout_s=60, idle_s=2)
        group.check_alive()
    assert [(m.key().decode(), decode(m.value()).record["missing_channels"]) for m in alerts] == [
        ("REG-A|e_ticket", ["email"])]
