"""The seeds' repair commands from Herald's derived state: `herald resend-missing` and
`herald sessions sync`, against open alerts and verdicts on the real compacted topics."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from confluent_kafka import Producer
from sqlalchemy.orm import Session

from herald.infra.kafka_io import producer_config
from herald.producers.sessions import open_session
from herald.schemas.catalog import MISSING_NOTIFICATIONS, SESSION_MISMATCHES, qualified
from herald.schemas.codec import decode, encode
from herald.schemas.ids import notification_id
from herald.schemas.tables import MessagingSession, OutboxRecord
from tests.support import HERALD, process_env


def publish(settings, topic: str, records: list[tuple[str, str | None, dict | None]]) -> None:
    """(key, schema, record) onto a compacted topic; a None record is a tombstone."""
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    for key, schema, record in records:
        value = None if record is None else encode(schema, record)
        producer.produce(qualified(topic, settings.namespace), value, key.encode())
    assert producer.flush(30) == 0


def alert(registration_id: str, notification_type: str, missing: list[str], kept: bool = True,
          lacking: str = "") -> dict:
    """An open alert as the detector writes it, keeping the event that called for it (without
    the field `lacking`: one kept before the catalog read it)."""
    now = datetime.now(UTC)
    event = {"event_id": str(uuid.uuid4()), "registration_id": registration_id, "status": "payment_verified",
             "participant_name": f"P{registration_id[-1]}", "phone": f"+6281200000{registration_id[-1]}",
             "email": f"p{registration_id[-1]}@example.test",
             "occurred_at": int((now - timedelta(minutes=10)).timestamp() * 1000), "workspace_id": "default"}
    event.pop(lacking, None)
    return {"subject_id": registration_id, "notification_type": notification_type,
            "workspace_id": "default", "expected_since": now - timedelta(minutes=10),
            "deadline": now - timedelta(minutes=5), "missing_channels": missing,
            "delivered_channels": [], "detected_at": now, "resend_attempts": 0,
            "source_event_type": "registration.payment_verified" if kept else "",
            "source_event": json.dumps(event) if kept else ""}


def herald(settings, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*HERALD, *args], env=process_env(settings), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_resend_missing_requests_each_open_alert_again_from_the_event_it_kept(settings, engine):
    publish(settings, MISSING_NOTIFICATIONS, [
        ("REG-1|e_ticket", "herald.MissingNotification", alert("REG-1", "e_ticket", ["whatsapp", "email"])),
        ("REG-2|e_ticket", "herald.MissingNotification", alert("REG-2", "e_ticket", ["email"])),
        ("REG-3|e_ticket", "herald.MissingNotification", alert("REG-3", "e_ticket", ["email"])),
        ("REG-3|e_ticket", None, None),  # delivered since: resolved
        ("REG-4|e_ticket", "herald.MissingNotification",
         alert("REG-4", "e_ticket", ["whatsapp"], lacking="phone")),
        ("REG-9|welcome", "herald.MissingNotification", alert("REG-9", "welcome", ["email"], kept=False)),
    ])
    preview = json.loads(herald(settings, "resend-missing", "--dry-run", "--json").stdout)
    with Session(engine) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxRecord)) == 0, "dry run wrote"
    done = json.loads(herald(settings, "resend-missing", "--type", "e_ticket", "--json").stdout)
    with Session(engine) as session:
        sent = {(row.topic, row.message_key): decode(row.payload).record
                for row in session.scalars(sa.select(OutboxRecord))}
    assert {(line["key"], line["action"]) for line in preview["lines"]} == {
        ("REG-1|e_ticket", "would resend"), ("REG-2|e_ticket", "would resend"),
        ("REG-4|e_ticket", "skipped: the kept event has no field 'phone'"),
        ("REG-9|welcome", "skipped: the alert keeps no event of a declared kind")}
    assert [line["action"] for line in done["lines"]] == ["resent", "resent",
                                                          "skipped: the kept event has no field 'phone'"]
    assert set(sent) == {
        ("notifications.whatsapp", notification_id("REG-1", "e_ticket", "whatsapp")),
        ("notifications.email", notification_id("REG-1", "e_ticket", "email")),
        ("notifications.email", notification_id("REG-2", "e_ticket", "email"))}
    whatsapp = sent[("notifications.whatsapp", notification_id("REG-1", "e_ticket", "whatsapp"))]
    assert (whatsapp["recipient"], whatsapp["params"]) == ("+62812000001", {"name": "P1"})


def test_resend_missing_refuses_a_notification_the_catalog_does_not_declare(settings):
    result = subprocess.run([*HERALD, "resend-missing", "--type", "refund_notice"], env=process_env(settings),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no notification refund_notice in the catalog" in result.stderr


def verdict(session_id: str, workspace: str, kind: str, observed: str | None = None) -> dict:
    now = datetime.now(UTC)  # when the test runs, not when it was collected
    return {"event_id": f"v-{session_id}", "session_id": session_id, "workspace_id": workspace, "kind": kind,
            "declared_status": "connected", "declared_instance": "http://127.0.0.1:9/",
            "declared_at": now - timedelta(minutes=1), "observed_instance": observed,
            "observed_status": None if observed is None else "connected", "last_seen_connected_at": None,
            "detected_at": now, "reason": f"{kind} on test"}


def test_sessions_sync_applies_open_verdicts_of_one_workspace_and_asks_for_reconnects(settings, engine):
    with Session(engine) as session, session.begin():
        for session_id, workspace in (("s-lost", "A"), ("s-moved", "A"), ("s-other", "B")):
            open_session(session, session_id=session_id, workspace_id=workspace, status="connected",
                         gateway_instance="http://127.0.0.1:9/")
    # The rows were declared a minute before the verdicts were reached against them.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE messaging_sessions SET updated_at = now() - interval '2 minutes'"))
    publish(settings, SESSION_MISMATCHES, [
        ("s-lost", "herald.SessionMismatch", verdict("s-lost", "A", "not_found")),
        ("s-moved", "herald.SessionMismatch", verdict("s-moved", "A", "instance_moved", "http://127.0.0.1:8/")),
        ("s-other", "herald.SessionMismatch", verdict("s-other", "B", "not_found")),
    ])
    preview = json.loads(herald(settings, "sessions", "sync", "--workspace", "A", "--dry-run",
                                "--json").stdout)
    done = json.loads(herald(settings, "sessions", "sync", "--workspace", "A", "--auto-reconnect",
                             "--json").stdout)
    with Session(engine) as session:
        rows = {row.session_id: row for row in session.scalars(sa.select(MessagingSession))}
    assert [line["action"] for line in preview["lines"]] == ["would apply", "would apply"]
    assert {line["key"]: line["action"] for line in done["lines"]} == {
        "s-lost": "disconnected, reconnect failed", "s-moved": "moved"}
    lost = rows["s-lost"]
    assert lost.status == "disconnected" and lost.metadata_["disconnected_by"].startswith("cli:")
    assert "reconnect_failed_at" in lost.metadata_, "the gateway at port 9 was asked and refused"
    assert rows["s-moved"].gateway_instance == "http://127.0.0.1:8/"
    assert rows["s-other"].status == "connected", "another workspace is left alone"
