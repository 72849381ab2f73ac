"""The session reconciler's logic without Faust: what the database declares against what the
gateway instances report, recomputed whole each time (level-based, as a Kubernetes controller).

The seeds find these mismatches with a cron job every 5 minutes (`whatsapp:sync-sessions
--auto-reconnect`, seed 004) and correct instance URLs with another (seed 002). Here:

- `Declared`: a session as the latest `sessions.events` record states it.
- `ObservedGateways`: the latest report of every gateway instance (`gateway.observations`),
  and when each session was last reported connected anywhere. An instance whose last report
  is older than the grace period is not reporting: what it held is unobserved, not gone.
- `verdict`: the one mismatch a session has now, or None; `reconcile` turns a change of
  verdict into one `SessionMismatch` record, or a tombstone once they agree again.

A declaration that just changed (status or instance) gets the grace period to show up in
the reports, so a reassignment is never "corrected" back by a report that predates it.
Every function here is pure: state in, new state and the records to produce out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from herald.schemas.catalog import SESSION_MISMATCHES
from herald.schemas.codec import encode
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, derived_headers

NOT_FOUND, INSTANCE_MOVED, STATUS_DRIFT, UNOBSERVED = (
    "not_found", "instance_moved", "status_drift", "unobserved")
CONNECTED = "connected"


@dataclass(frozen=True)
class Declared:
    session_id: str
    workspace_id: str
    status: str
    instance: str | None
    event_id: str
    occurred_at_ms: int  # the latest event: a correction applies only if nothing changed since
    changed_at_ms: int  # when status or instance last changed: the grace period starts there

    @classmethod
    def from_event(cls, event: Mapping[str, Any], previous: Declared | None = None) -> Declared:
        occurred = _epoch_ms(event["occurred_at"])
        same = (previous is not None and previous.status == event["status"]
                and previous.instance == event["gateway_instance"])
        return cls(event["session_id"], event["workspace_id"], event["status"], event["gateway_instance"],
                   event["event_id"], occurred, previous.changed_at_ms if same and previous else occurred)


@dataclass(frozen=True)
class Verdict:
    kind: str
    observed_instance: str | None = None  # where it is connected instead
    observed_status: str | None = None  # what the declared instance reports, if it holds it


@dataclass(frozen=True)
class Report:
    instance: str
    observed_at_ms: int
    sessions: Mapping[str, str]  # session id -> status on that instance


class ObservedGateways:
    """The latest report per instance, and the last time each session was seen connected."""

    def __init__(self) -> None:
        self._reports: dict[str, Report] = {}
        self._last_connected_ms: dict[str, int] = {}

    def apply(self, observation: Mapping[str, Any]) -> set[str]:
        """One GatewayObservation; returns the sessions it may have changed (an older one: none)."""
        report = Report(observation["instance"], _epoch_ms(observation["observed_at"]),
                        {s["session_id"]: s["status"] for s in observation["sessions"]})
        previous = self._reports.get(report.instance)
        if previous is not None and previous.observed_at_ms >= report.observed_at_ms:
            return set()  # out of order or repeated: the newer report stands
        self._reports[report.instance] = report
        for session_id, status in report.sessions.items():
            if status == CONNECTED:
                seen = self._last_connected_ms.get(session_id, 0)
                self._last_connected_ms[session_id] = max(seen, report.observed_at_ms)
        return set(report.sessions) | set(previous.sessions if previous else ())

    def reporting(self, now_ms: int, grace_ms: int) -> dict[str, Report]:
        return {i: r for i, r in self._reports.items() if now_ms - r.observed_at_ms <= grace_ms}

    def last_connected_ms(self, session_id: str) -> int | None:
        return self._last_connected_ms.get(session_id)

    def forget_before(self, oldest_ms: int) -> None:
        """Drop what is too old to matter, so memory stays bounded by what is reported."""
        self._reports = {i: r for i, r in self._reports.items() if r.observed_at_ms >= oldest_ms}
        self._last_connected_ms = {s: t for s, t in self._last_connected_ms.items() if t >= oldest_ms}


def verdict(declared: Declared, gateways: ObservedGateways, now_ms: int, grace_ms: int) -> Verdict | None:
    """The mismatch between the declaration and the reports now, None when they agree."""
    if now_ms - declared.changed_at_ms < grace_ms:
        return None  # just changed: the reports have not caught up yet
    live, session_id = gateways.reporting(now_ms, grace_ms), declared.session_id
    reported = {i: r.sessions[session_id] for i, r in live.items() if session_id in r.sessions}
    connected_on = sorted(i for i, status in reported.items() if status == CONNECTED)
    on_declared = reported.get(declared.instance) if declared.instance else None
    if declared.status != CONNECTED:
        return Verdict(STATUS_DRIFT, connected_on[0], on_declared) if connected_on else None
    if declared.instance in connected_on:
        return None
    if connected_on:
        return Verdict(INSTANCE_MOVED, connected_on[0], on_declared)
    declared_reporting = declared.instance in live if declared.instance else bool(live)
    if not declared_reporting:
        return Verdict(UNOBSERVED)  # its instance went silent: nothing is known, nothing is changed
    last_seen = gateways.last_connected_ms(declared.session_id)
    if last_seen is not None and now_ms - last_seen < grace_ms:
        return None  # seen connected moments ago: give the next reports their chance
    return Verdict(NOT_FOUND, None, on_declared)


@dataclass(frozen=True)
class SessionEntry:
    """The reconciler's state per session: the declaration, and the mismatch it reported (with
    the latest evidence for it: what the declared instance reports may change, see `_identity`)."""

    declared: Declared | None = None
    open: Verdict | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionEntry:
        declared, open_ = data.get("declared"), data.get("open")
        return cls(Declared(**declared) if declared else None, Verdict(**open_) if open_ else None)


def declare(entry: SessionEntry | None, event: Mapping[str, Any] | None, session_id: str) -> SessionEntry:
    """A sessions.events record (None: a tombstone, the session was deleted)."""
    entry = entry or SessionEntry()
    if event is None:
        return replace(entry, declared=None)
    return replace(entry, declared=Declared.from_event(event, entry.declared))


def needs_reconcile(entry: SessionEntry, gateways: ObservedGateways, now_ms: int, grace_ms: int) -> bool:
    """Whether the verdict now differs from the one stored (another mismatch, or new evidence
    for it): the owner should `reconcile`, which reports only another mismatch."""
    current = verdict(entry.declared, gateways, now_ms, grace_ms) if entry.declared else None
    return current != entry.open


def reconcile(entry: SessionEntry, session_id: str, gateways: ObservedGateways, now_ms: int,
              grace_ms: int) -> tuple[SessionEntry | None, list[OutgoingRecord]]:
    """Recompute the verdict; a change produces the mismatch, or its tombstone once resolved."""
    current = verdict(entry.declared, gateways, now_ms, grace_ms) if entry.declared else None
    records: list[OutgoingRecord] = []
    if _identity(current) != _identity(entry.open):
        if current is None:
            records.append(_tombstone(session_id, entry))
        else:
            assert entry.declared is not None
            records.append(_mismatch(entry.declared, current, gateways, now_ms, grace_ms))
    if entry.declared is None:
        return None, records  # deleted: forgotten once any open mismatch is resolved
    return replace(entry, open=current), records


def _identity(found: Verdict | None) -> tuple[str, str | None] | None:
    """What makes a mismatch another one, as its event id does: its kind and where the session
    is instead. What the declared instance reports is evidence: a reconnect asked for after a
    loss turns "absent" into "qr_pending" there, and that is the same loss, not a second one."""
    return None if found is None else (found.kind, found.observed_instance)


def _mismatch(declared: Declared, found: Verdict, gateways: ObservedGateways, now_ms: int,
              grace_ms: int) -> OutgoingRecord:
    last_seen = gateways.last_connected_ms(declared.session_id)
    record = {
        "event_id": derived_event_id(declared.event_id, f"mismatch|{found.kind}|{found.observed_instance}"),
        "session_id": declared.session_id, "workspace_id": declared.workspace_id, "kind": found.kind,
        "declared_status": declared.status, "declared_instance": declared.instance,
        "declared_at": _datetime(declared.occurred_at_ms), "observed_instance": found.observed_instance,
        "observed_status": found.observed_status,
        "last_seen_connected_at": None if last_seen is None else _datetime(last_seen),
        "detected_at": _datetime(now_ms), "reason": describe(declared, found, grace_ms),
    }
    headers = derived_headers({}, record["event_id"], f"session.mismatch.{found.kind}")
    return OutgoingRecord(SESSION_MISMATCHES, declared.session_id.encode(),
                          encode("herald.SessionMismatch", record), headers)


def _tombstone(session_id: str, entry: SessionEntry) -> OutgoingRecord:
    source = entry.declared.event_id if entry.declared else session_id
    event_id = derived_event_id(source, f"mismatch-resolved|{entry.open}")
    return OutgoingRecord(SESSION_MISMATCHES, session_id.encode(), None,
                          derived_headers({}, event_id, "session.mismatch.resolved"))


def describe(declared: Declared, found: Verdict, grace_ms: int) -> str:
    """One line for the audit trail, in the words of the seeds' sync command."""
    where = declared.instance or "no instance"
    grace = f"{grace_ms / 1000:g} s"
    if found.kind == NOT_FOUND:
        held = f"reports it {found.observed_status}" if found.observed_status else "does not hold it"
        return f"declared connected on {where}, which {held}; connected on no instance for over {grace}"
    if found.kind == INSTANCE_MOVED:
        return f"declared on {where}, reported connected on {found.observed_instance}"
    if found.kind == STATUS_DRIFT:
        return f"declared {declared.status}, reported connected on {found.observed_instance}"
    return f"declared connected on {where}, which has not reported for over {grace}"


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _datetime(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)
