"""The session reconciler's verdicts (`sessions.mismatches`), applied to the database through the
outbox, so it stays the source of truth. What the seeds' `whatsapp:sync-sessions
--auto-reconnect` did every 5 minutes (seed 004), and `whatsapp:sync-instance-urls` (seed 002):

- not_found: the session is marked disconnected, with `auto_disconnected_at` and `reason` in
  its metadata. Where auto-reconnect is on for its workspace, its gateway instance is then
  asked to reconnect it (`POST <instance>/sessions/<id>/reconnect`, after the transaction
  committed), and `auto_reconnect_at` and `reconnect_triggered_by` are recorded.
- instance_moved: the assigned instance is updated (`previous_instance`, `corrected_by`).
- status_drift, unobserved: reported only; too little is known to change anything.

A verdict reached against an older declaration than the row's is skipped, so it never undoes
a newer change. A reconnect asked for but not recorded (a crash in between) is asked again
when the verdict is read again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.producers.sessions import update_session
from herald.schemas.catalog import SESSION_MISMATCHES
from herald.schemas.headers import iso
from herald.schemas.tables import MessagingSession

log = logging.getLogger(__name__)

TRIGGERED_BY = "session-reconciler"
RECONNECT_PATH = "/sessions/{session_id}/reconnect"  # on the session's gateway instance


@dataclass
class MismatchStats:
    disconnected: int = 0
    moved: int = 0
    reconnect_requested: int = 0
    reconnect_failed: int = 0
    reported_only: int = 0  # status_drift, unobserved
    resolved: int = 0  # tombstones
    stale: int = 0  # reached against an older declaration, or already applied
    unknown_session: int = 0
    undecodable: int = 0


@dataclass(frozen=True)
class ReconnectPolicy:
    workspaces: tuple[str, ...] = ("*",)  # "*": every workspace

    def applies_to(self, workspace_id: str) -> bool:
        return "*" in self.workspaces or workspace_id in self.workspaces


@dataclass
class MismatchCorrections:
    engine: sa.Engine
    policy: ReconnectPolicy
    client: httpx.Client
    triggered_by: str = TRIGGERED_BY  # who the audit metadata names: the reconciler, or an operator
    stats: MismatchStats = field(default_factory=MismatchStats)
    _reconnects: list[tuple[str, str | None]] = field(default_factory=list)  # (session, instance)

    topic = SESSION_MISMATCHES
    schema_name = "herald.SessionMismatch"

    def apply(self, session: Session, mismatch: dict[str, Any] | None, key: str,
              correlation_id: str | None) -> None:
        if mismatch is None:
            self.stats.resolved += 1
            return
        row = session.get(MessagingSession, mismatch["session_id"], with_for_update=True)
        if row is None:
            self.stats.unknown_session += 1
            log.warning("mismatch for unknown session %s skipped", mismatch["session_id"])
            return
        kind = mismatch["kind"]
        if _epoch_ms(row.updated_at) > _epoch_ms(mismatch["declared_at"]) or (
                kind == "not_found" and row.status != "connected"):
            self.stats.stale += 1
        elif kind == "not_found":
            update_session(session, row.session_id, status="disconnected", correlation_id=correlation_id,
                           metadata={"auto_disconnected_at": iso(datetime.now(UTC)),
                                     "reason": mismatch["reason"], "disconnected_by": self.triggered_by})
            self.stats.disconnected += 1
            log.info("session %s marked disconnected: %s", row.session_id, mismatch["reason"])
        elif kind == "instance_moved":
            update_session(session, row.session_id, gateway_instance=mismatch["observed_instance"],
                           correlation_id=correlation_id,
                           metadata={"previous_instance": row.gateway_instance or "",
                                     "corrected_by": self.triggered_by,
                                     "corrected_at": iso(datetime.now(UTC))})
            self.stats.moved += 1
        else:
            self.stats.reported_only += 1
        if kind == "not_found" and self._awaiting_reconnect(row):
            self._reconnects.append((row.session_id, row.gateway_instance))

    def _awaiting_reconnect(self, row: MessagingSession) -> bool:
        """Disconnected by us, reconnect on for its workspace, and not yet asked since."""
        disconnected_at = row.metadata_.get("auto_disconnected_at")
        asked_at = row.metadata_.get("auto_reconnect_at", "")
        return (row.status == "disconnected" and disconnected_at is not None
                and asked_at < disconnected_at and self.policy.applies_to(row.workspace_id))

    def after_commit(self) -> None:
        """Ask each gateway to reconnect, and record that it was asked (or why it failed)."""
        reconnects, self._reconnects = self._reconnects, []
        for session_id, instance in reconnects:
            outcome = self._request_reconnect(session_id, instance)
            with Session(self.engine) as session, session.begin():
                update_session(session, session_id, metadata=outcome)

    def _request_reconnect(self, session_id: str, instance: str | None) -> dict[str, str]:
        outcome = request_reconnect(self.client, session_id, instance, self.triggered_by)
        if "reconnect_failed_at" in outcome:
            self.stats.reconnect_failed += 1
        else:
            self.stats.reconnect_requested += 1
        return outcome


def request_reconnect(client: httpx.Client, session_id: str, instance: str | None,
                      triggered_by: str) -> dict[str, str]:
    """Ask the session's gateway instance to reconnect it; the metadata that records the outcome."""
    now = iso(datetime.now(UTC))
    try:
        if instance is None:
            raise ValueError("the session has no gateway instance")
        client.post(instance.rstrip("/") + RECONNECT_PATH.format(session_id=session_id)).raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("session %s: reconnect request to %s failed: %s", session_id, instance, exc)
        return {"reconnect_failed_at": now, "reconnect_error": str(exc)[:300]}
    log.info("session %s: reconnect requested from %s", session_id, instance)
    return {"auto_reconnect_at": now, "reconnect_triggered_by": triggered_by}


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
