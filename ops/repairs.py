"""The seeds' repair commands, done from Herald's derived state instead of a hand-run anti-join:

- `resend_missing`: `notifications:resend-missing`. The open alerts of notifications.missing
  name what is missing and keep the event that called for it; each is requested again
  through the outbox from that event, by the catalog's rules, with the same notification id,
  so a provider that already has it drops the copy.
- `sync_sessions`: `whatsapp:sync-sessions --auto-reconnect`. The open verdicts of
  sessions.mismatches are applied now, by the same code as `herald corrections`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.consumers.mismatches import MismatchCorrections, ReconnectPolicy
from herald.infra.kafka_views import live_entries
from herald.infra.settings import Settings
from herald.producers.outbox import DomainEvent, emit
from herald.schemas.catalog import MISSING_NOTIFICATIONS, SESSION_MISMATCHES, notification_topic, qualified
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.event_json import event_from_json
from herald.streams.rules import EventLacksField, notification_requests


@dataclass
class Repair:
    """One line of a repair command's report."""

    key: str  # subject|notification, or a session id
    what: str  # the alert's or verdict's kind
    detail: str
    action: str  # what was done (or would be, in a dry run)


@dataclass
class RepairReport:
    dry_run: bool
    lines: list[Repair] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for line in self.lines if line.action == action)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "lines": [dataclasses.asdict(line) for line in self.lines]}


def _open_records(bootstrap: str, topic: str, schema_name: str) -> list[dict[str, Any]]:
    records = []
    for entry in live_entries(bootstrap, topic).values():
        try:
            records.append(decode_expecting(entry.value, schema_name))
        except UndecodableRecord:
            continue  # the topic's own DLQ owner reports it; a repair acts on what it can read
    return records


def resend_missing(settings: Settings, catalog: Catalog, bootstrap: str, engine: sa.Engine,
                   types: tuple[str, ...], dry_run: bool) -> RepairReport:
    unknown = sorted(set(types) - set(catalog.notifications))
    if unknown:
        raise ValueError(f"no notification {', '.join(unknown)} in the catalog; it declares "
                         f"{', '.join(catalog.notifications)}")
    alerts = _open_records(bootstrap, qualified(MISSING_NOTIFICATIONS, settings.namespace),
                           "herald.MissingNotification")
    report = RepairReport(dry_run)
    for alert in sorted(alerts, key=lambda a: (a["notification_type"], a["subject_id"])):
        if types and alert["notification_type"] not in types:
            continue
        with Session(engine) as session, session.begin():
            report.lines.append(_resend_one(session, catalog, alert, dry_run))
    return report


def _resend_one(session: Session, catalog: Catalog, alert: dict[str, Any], dry_run: bool) -> Repair:
    key = f"{alert['subject_id']}|{alert['notification_type']}"
    channels = tuple(alert["missing_channels"])
    missing = f"missing on {', '.join(channels)}"
    kind = catalog.event_kind_of(alert["source_event_type"])
    if not alert["source_event"] or kind not in catalog.events:
        return Repair(key, "missing", missing, "skipped: the alert keeps no event of a declared kind")
    event = event_from_json(orjson.loads(alert["source_event"]), catalog.event_schemas[kind])
    try:
        requested = notification_requests(catalog, kind, alert["source_event_type"], event)
    except EventLacksField as exc:  # the catalog now reads a field the kept event lacks
        return Repair(key, "missing", missing, f"skipped: the kept event has no field {exc.field!r}")
    requests = [r for r in requested
                if r["notification_type"] == alert["notification_type"] and r["channel"] in channels]
    if not dry_run:
        for request in requests:
            emit(session, DomainEvent(notification_topic(request["channel"]), request["notification_id"],
                                      "herald.NotificationRequest", "notification.resend_requested", request))
    return Repair(key, "missing", missing, "would resend" if dry_run else "resent")


def sync_sessions(settings: Settings, bootstrap: str, engine: sa.Engine, workspace: str | None,
                  auto_reconnect: bool, dry_run: bool, actor: str) -> RepairReport:
    verdicts = _open_records(bootstrap, qualified(SESSION_MISMATCHES, settings.namespace),
                             "herald.SessionMismatch")
    report = RepairReport(dry_run)
    policy = ReconnectPolicy(("*",) if auto_reconnect else ())
    with httpx.Client(timeout=10.0) as client:
        corrections = MismatchCorrections(engine, policy, client, triggered_by=actor)
        for verdict in sorted(verdicts, key=lambda v: v["session_id"]):
            if workspace is not None and verdict["workspace_id"] != workspace:
                continue
            before = dataclasses.replace(corrections.stats)
            if not dry_run:
                with Session(engine) as session, session.begin():
                    corrections.apply(session, verdict, verdict["session_id"], None)
                corrections.after_commit()
            report.lines.append(Repair(verdict["session_id"], verdict["kind"], verdict["reason"],
                                       _sync_action(before, corrections.stats, dry_run)))
    return report


def _sync_action(before: Any, after: Any, dry_run: bool) -> str:
    if dry_run:
        return "would apply"
    changed = [f"{name.replace('_', ' ')}" for name, value in dataclasses.asdict(after).items()
               if value != getattr(before, name)]
    return ", ".join(changed) or "nothing to do"


class UnknownSession(LookupError):
    pass


def reconnect_session(engine: sa.Engine, session_id: str, actor: str) -> dict[str, str]:
    """Ask a session's gateway instance to reconnect it now, and record who asked and how it went."""
    from herald.consumers.mismatches import request_reconnect
    from herald.producers.sessions import update_session
    from herald.schemas.tables import MessagingSession

    with Session(engine) as session:
        row = session.get(MessagingSession, session_id)
        if row is None:
            raise UnknownSession(f"no session {session_id!r}")
        instance = row.gateway_instance
    with httpx.Client(timeout=10.0) as client:
        outcome = request_reconnect(client, session_id, instance, actor)
    with Session(engine) as session, session.begin():
        update_session(session, session_id, metadata=outcome)
    return outcome
