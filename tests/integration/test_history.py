"""A notification's story on a real broker and database: complete across a retry, a dead letter and
a replay, and the same after the table is lost and rebuilt from the topics."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from confluent_kafka import Producer

from herald.infra.kafka_io import producer_config
from herald.ops.notification_history import StoryQuery, notification_stories, run_history_index
from herald.schemas import headers as h
from herald.schemas.catalog import NOTIFICATION_STATUS, notification_topic, qualified
from herald.schemas.codec import encode
from herald.schemas.tables import NotificationHistoryEntry
from tests.catalogs import example
from tests.integration.test_cli import herald
from tests.integration.test_ops_api import api  # noqa: F401 (the served API, a fixture)
from tests.support import process_env


def request(key: str) -> dict:
    return {"notification_id": f"{key}-email", "subject_id": key, "notification_type": "e_ticket",
            "channel": "email", "recipient": "rina@example.test", "template": "e_ticket",
            "params": {"participant_name": "Rina"}, "source_event_id": str(uuid.uuid4()),
            "source_occurred_at": datetime.now(UTC), "workspace_id": "default",
            "event_type": "registration.payment_verified"}


def status(key: str, kind: str, attempts: int, **fields: object) -> dict:
    return {"notification_id": f"{key}-email", "subject_id": key, "notification_type": "e_ticket",
            "channel": "email", "status": kind, "attempts": attempts, "provider_message_id": None,
            "error": None, "error_class": None, "due_at": None, "gateway_instance": None,
            "source_occurred_at": datetime.now(UTC), "occurred_at": datetime.now(UTC), **fields}


def write_story(settings, key: str) -> None:
    """Requested, refused and retried, dead-lettered, replayed by an operator, then sent."""
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))

    def send(topic: str, value: bytes, headers: dict[str, str] | None = None) -> None:
        producer.produce(qualified(topic, settings.namespace), key=f"{key}-email".encode(), value=value,
                         headers=[(k, v.encode()) for k, v in (headers or {}).items()])
        producer.flush(30)
        time.sleep(0.02)  # each moment after the one before

    requests, due = notification_topic("email"), datetime.now(UTC) + timedelta(seconds=5)
    send(requests, encode("herald.NotificationRequest", request(key)))
    send(NOTIFICATION_STATUS, encode("herald.NotificationStatus", status(
        key, "retry_scheduled", 1, error="HTTP 503: busy", error_class="ProviderUnavailable", due_at=due)))
    send(NOTIFICATION_STATUS, encode("herald.NotificationStatus", status(
        key, "dead_lettered", 2, error="550 mailbox unavailable", error_class="ProviderRejected")))
    send(requests, encode("herald.NotificationRequest", request(key)), {h.REPLAY_COUNT: "1"})
    send(NOTIFICATION_STATUS, encode("herald.NotificationStatus", status(key, "sent", 3,
                                                                         provider_message_id="msg-77")))


def table_rows(engine: sa.Engine) -> list[tuple]:
    entry = NotificationHistoryEntry
    columns = [c for c in entry.__table__.columns if c.name not in ("id", "indexed_at")]
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(*columns).order_by(
            entry.source_topic, entry.source_partition, entry.source_offset))]


def test_a_story_across_retry_dead_letter_and_replay_survives_a_rebuild(settings, engine):
    key = f"REG-{uuid.uuid4().hex[:8]}"
    write_story(settings, key)
    stats = run_history_index(settings, example(), threading.Event(), drain=True)
    assert (stats.indexed, stats.skipped) == (5, 0)

    (told,) = notification_stories(engine, StoryQuery(key=key), mask=False)
    assert [m["kind"] for m in told["timeline"]] == [
        "requested", "retry_scheduled", "dead_lettered", "replayed", "sent"]
    assert (told["status"], told["recipient"], told["channel"]) == ("sent", "rina@example.test", "email")
    retry, dead, sent = told["timeline"][1], told["timeline"][2], told["timeline"][4]
    assert (retry["attempts"], retry["error_class"]) == (1, "ProviderUnavailable") and "due_at" in retry
    assert (dead["attempts"], dead["error_class"]) == (2, "ProviderRejected")
    assert (sent["attempts"], sent["provider_message_id"]) == (3, "msg-77")
    assert notification_stories(engine, StoryQuery(key=key, status="dead_lettered"), mask=False) == []
    by_field = notification_stories(engine, StoryQuery(recipient="rina@example.test",
                                                       field=("participant_name", "Rina")), mask=True)
    assert [s["notification_id"] for s in by_field if s["subject_id"] == key] == [f"{key}-email"]
    assert all(s["recipient"] == "r•••@example.test" for s in by_field)

    live = table_rows(engine)
    with engine.begin() as conn:
        conn.execute(sa.delete(NotificationHistoryEntry))  # lost
    rebuilt = run_history_index(settings, example(), threading.Event(), rebuild=True)
    assert rebuilt.indexed == len(live) and table_rows(engine) == live

    shown = herald("notifications", "show", key, "--json", env=process_env(settings), timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [told]
    missing = herald("notifications", "show", "REG-nobody", env=process_env(settings), timeout=60)
    assert missing.returncode == 1 and "no notification matches" in missing.stderr
    unasked = herald("notifications", "show", env=process_env(settings), timeout=60)
    assert unasked.returncode == 2 and "give a key" in unasked.stderr


def test_the_api_tells_the_story_masked_for_viewers(settings, api):  # noqa: F811 (pytest passes the fixture)
    client, tokens, _first_dead_letter = api
    key = f"REG-{uuid.uuid4().hex[:8]}"
    write_story(settings, key)
    run_history_index(settings, example(), threading.Event(), drain=True)

    def ask(role: str | None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
        return client.get("/v1/notifications", params=params, headers=headers)

    viewer, operator = ask("viewer", key=key), ask("operator", key=key, status="sent")
    assert viewer.status_code == operator.status_code == 200, (viewer.text, operator.text)
    (seen,), (whole,) = viewer.json()["items"], operator.json()["items"]
    assert seen["recipient"] == "r•••@example.test" and whole["recipient"] == "rina@example.test"
    assert [m["kind"] for m in seen["timeline"]] == [m["kind"] for m in whole["timeline"]] == [
        "requested", "retry_scheduled", "dead_lettered", "replayed", "sent"]
    by_field = ask("viewer", recipient="rina@example.test", field="participant_name=Rina").json()
    assert key in {s["subject_id"] for s in by_field["items"]}
    nothing = ask("viewer", status="sent")
    assert nothing.status_code == 422 and "give a key" in nothing.json()["detail"]
    assert ask("viewer", key=key, field="no-equals").status_code == 422
    assert ask(None, key=key).status_code == 401
