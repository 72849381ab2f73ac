"""Ops API routes over the streams' derived state: open missing notifications (and resending
them), open session mismatches (and asking a gateway to reconnect a session)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from herald.infra.kafka_views import KafkaUnavailable, live_entries
from herald.ops.dead_letter_views import jsonable_record
from herald.ops.ops_api import ERRORS, OPERATOR_ERRORS, ApiError, Operator, Viewer, Wired, api_error
from herald.ops.repairs import UnknownSession, reconnect_session, resend_missing
from herald.schemas.catalog import (
    MISSING_NOTIFICATIONS,
    SESSION_MISMATCHES,
    dead_letter_topics,
    notification_topic,
    qualified,
)
from herald.schemas.codec import UndecodableRecord, decode_expecting

streams = APIRouter(prefix="/v1", responses=ERRORS)
# Notification names as the catalog writes them (which ones exist is the catalog's to say).
NotificationName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]


class ResendRequest(BaseModel):
    types: list[NotificationName] = Field(default_factory=list, max_length=100)
    dry_run: bool = False


def _open(wiring: Any, topic: str, schema_name: str) -> list[dict[str, Any]]:
    if wiring.kafka_bootstrap is None:
        raise KafkaUnavailable("Kafka is not configured and not running")
    entries = live_entries(wiring.kafka_bootstrap, qualified(topic, wiring.settings.namespace))
    records = []
    for entry in entries.values():
        try:
            records.append(jsonable_record(decode_expecting(entry.value, schema_name)))
        except UndecodableRecord:
            continue
    return records


@streams.get("/catalog", tags=["catalog"])
def catalog(_who: Viewer, wiring: Wired) -> dict[str, Any]:
    """The catalog this pipeline runs: its event kinds, notifications and channels, and the
    topics an operator filters dead letters by (the console's filters come from here)."""
    declared = wiring.catalog
    return {
        "name": declared.name,
        "events": {kind: {"topic": declared.topic_of(kind), "types": list(spec.types)}
                   for kind, spec in declared.events.items()},
        "notifications": {name: {"trigger": list(spec.trigger), "channels": list(spec.channels),
                                 "sla_s": spec.sla, "resends": spec.resends}
                          for name, spec in declared.notifications.items()},
        "channels": {name: {"kind": spec.kind, "topic": notification_topic(name)}
                     for name, spec in declared.channels.items()},
        "dead_letter_topics": [topic.removesuffix(".dlq") for topic in dead_letter_topics(declared)],
    }


@streams.get("/missing", tags=["missing notifications"])
def list_missing(_who: Viewer, wiring: Wired, notification_type: NotificationName | None = None
                 ) -> dict[str, Any]:
    """Open missing notifications: past their SLA, not delivered on every channel."""
    _known_notifications(wiring, [notification_type] if notification_type else [], "notification_type")
    alerts = [a for a in _open(wiring, MISSING_NOTIFICATIONS, "herald.MissingNotification")
              if notification_type is None or a["notification_type"] == notification_type]
    alerts.sort(key=lambda a: a["deadline"])
    return {"total": len(alerts), "items": alerts}


@streams.post("/missing/resend", tags=["missing notifications"], responses=OPERATOR_ERRORS)
def resend(body: ResendRequest, _who: Operator, wiring: Wired) -> dict[str, Any]:
    """Request open missing notifications again (same notification ids) through the outbox."""
    _known_notifications(wiring, body.types, "types")
    if wiring.kafka_bootstrap is None:
        raise KafkaUnavailable("Kafka is not configured and not running")
    report = resend_missing(wiring.settings, wiring.catalog, wiring.kafka_bootstrap, wiring.engine,
                            tuple(body.types), body.dry_run)
    return report.as_dict()


def _known_notifications(wiring: Any, names: list[str], field: str) -> None:
    unknown = sorted(set(names) - set(wiring.catalog.notifications))
    if unknown:
        raise api_error(422, "unknown_notification", f"{field}: no notification {', '.join(unknown)} in the "
                        f"catalog; it declares {', '.join(wiring.catalog.notifications)}")


@streams.get("/sessions/mismatches", tags=["sessions"])
def list_mismatches(_who: Viewer, wiring: Wired, workspace: str | None = None) -> dict[str, Any]:
    """Open session mismatches: sessions the database and the gateways disagree about."""
    verdicts = [v for v in _open(wiring, SESSION_MISMATCHES, "herald.SessionMismatch")
                if workspace is None or v["workspace_id"] == workspace]
    verdicts.sort(key=lambda v: v["session_id"])
    return {"total": len(verdicts), "items": verdicts}


@streams.post("/sessions/{session_id}/reconnect", tags=["sessions"],
              responses={**OPERATOR_ERRORS, 404: {"model": ApiError}})
def reconnect(session_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00]+$")],
              who: Operator,
              wiring: Wired) -> dict[str, Any]:
    """Ask the session's gateway instance to reconnect it; the outcome is recorded on the session."""
    try:
        outcome = reconnect_session(wiring.engine, session_id, who.actor)
    except UnknownSession as exc:
        raise api_error(404, "not_found", str(exc)) from None
    return {"session_id": session_id, "requested": "auto_reconnect_at" in outcome, **outcome}
