"""The missing-notification detector's logic without Faust: expectations, deliveries, deadlines.

One `Expectation` per (subject, notification), the state the seeds' SQL anti-join
recomputes by hand (`notifications:resend-missing --dry-run`). An event that triggers a
notification with an SLA in the catalog starts it: expected since the event, due by the
SLA, on the notification's channels. Each `sent` status marks its channel delivered.

Deadlines are not Faust timers (Faust has no per-key timer, and its window-close callback
is unreliable): a periodic scan asks `needs_check` of every local entry, and the agent that
owns the key then calls `check`, which re-reads the state before emitting anything. So an
entry checked twice, or by a worker that lost the partition meanwhile, alerts once.

Inputs may arrive in any order: a delivery seen before the event that calls for it is kept,
and its expectation starts already satisfied. A settled entry is kept for the input's
retention, so an event read again is not expected anew. Every function here
is pure (but for a log line): it takes the state (None when there is none) and returns the new state (None to
forget it) with the records to produce.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from herald.schemas.catalog import MISSING_NOTIFICATIONS, missing_key, notification_topic
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import encode
from herald.schemas.event_json import event_from_json, event_to_json
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, derived_headers
from herald.streams.rules import EventLacksField, fields_read, guards_pass, notification_requests

log = logging.getLogger(__name__)

# How long a settled entry is kept: one delivered everywhere (so an event read again, after
# a restart or a reset of the group, is recognised instead of expected anew), or a delivery
# whose event never came. The retention of the event topics: no input older than that can
# arrive again.
FORGET_AFTER_MS = 7 * 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class Expectation:
    subject_id: str  # the key of the event that calls for the notification
    notification_type: str
    channels: tuple[str, ...] = ()  # empty until the event that calls for it is seen
    delivered: tuple[str, ...] = ()
    expected_since_ms: int | None = None
    deadline_ms: int | None = None
    first_seen_ms: int = 0  # when this state began (for forgetting orphans)
    completed_at_ms: int | None = None  # delivered on every channel
    alerted_at_ms: int | None = None
    resend_attempts: int = 0
    next_resend_ms: int | None = None
    event: dict[str, Any] = field(default_factory=dict)  # the fields resends read, as JSON
    event_kind: str = ""
    event_type: str = ""
    workspace_id: str = "default"

    @property
    def key(self) -> str:
        return missing_key(self.subject_id, self.notification_type)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c for c in self.channels if c not in self.delivered)

    @property
    def complete(self) -> bool:
        return bool(self.channels) and not self.missing

    def as_json(self) -> dict[str, Any]:
        # Shallow, unlike dataclasses.asdict (which deep-copies the event): it is only dumped.
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Expectation:
        if "subject_id" not in data:
            # Written before catalogs: the first field (dicts keep their order) was the subject's id.
            first, *_rest = data
            data = {"subject_id": data[first], **{k: v for k, v in data.items() if k != first}}
        fields = {k: v for k, v in data.items() if k in _FIELDS}
        return cls(**{**fields, "channels": tuple(data["channels"]), "delivered": tuple(data["delivered"])})


_FIELDS = frozenset(Expectation.__dataclass_fields__)


@dataclass(frozen=True)
class Policy:
    """The catalog's SLAs and bounded resends, per notification."""

    catalog: Catalog
    # (kind, event type) -> the fields an expectation keeps: only those a resend reads, so
    # the table (and its changelog) holds no more of the event, personal data included.
    kept_fields: Mapping[tuple[str, str], frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kept = {(kind, event_type): fields_read(self.catalog, kind, event_type)
                for kind, spec in self.catalog.events.items() for event_type in spec.types}
        object.__setattr__(self, "kept_fields", kept)

    def sla_ms(self, notification_type: str) -> int:
        spec = self.catalog.notifications.get(notification_type)
        return int((spec.sla or 0) * 1000) if spec is not None else 0

    def max_resends(self, notification_type: str) -> int:
        """0 for a notification the catalog no longer declares: its entries only alert."""
        spec = self.catalog.notifications.get(notification_type)
        return spec.resends if spec is not None else 0


def expect(states: Mapping[str, Expectation], kind: str, event_type: str, event: Mapping[str, Any],
           now_ms: int, policy: Policy) -> dict[str, Expectation | None]:
    """An event: the expectations it starts, by key (None: forget that key)."""
    started: dict[str, Expectation | None] = {}
    subject = str(event[policy.catalog.events[kind].key])
    for name, notification in policy.catalog.notifications_on(event_type):
        if notification.sla is not None and guards_pass(notification, event):
            key = missing_key(subject, name)
            started[key] = _started(states.get(key), kind, event_type, event, name, now_ms, policy)
    return started


def _started(known: Expectation | None, kind: str, event_type: str, event: Mapping[str, Any],
             notification_type: str, now_ms: int, policy: Policy) -> Expectation | None:
    if known is not None and known.expected_since_ms is not None:
        return known  # the same event again (a replay): the first one set the deadline
    spec = policy.catalog.events[kind]
    since = _epoch_ms(event[spec.time_field])
    started = {"channels": tuple(policy.catalog.notifications[notification_type].channels),
               "expected_since_ms": since, "deadline_ms": since + policy.sla_ms(notification_type),
               "event": event_to_json(event, policy.kept_fields[kind, event_type]),
               "event_kind": kind, "event_type": event_type,
               "workspace_id": str(event[spec.workspace_field]) if spec.workspace_field else "default"}
    if known is None:  # the common case, built at once (`replace` costs as much again)
        return Expectation(str(event[spec.key]), notification_type, first_seen_ms=now_ms, **started)
    expectation = replace(known, **started)
    if expectation.complete:  # delivered before it was expected
        return replace(expectation, completed_at_ms=now_ms)
    return expectation


def delivered(state: Expectation | None, status: Mapping[str, Any],
              now_ms: int) -> tuple[Expectation | None, list[OutgoingRecord]]:
    """A NotificationStatus: `sent` marks its channel delivered; a late delivery resolves."""
    if status["status"] != "sent":
        return state, []
    state = state or Expectation(status["subject_id"], status["notification_type"], first_seen_ms=now_ms)
    if status["channel"] in state.delivered:
        return state, []
    state = replace(state, delivered=(*state.delivered, status["channel"]))
    if state.complete:
        state = replace(state, completed_at_ms=now_ms, next_resend_ms=None)
    if state.alerted_at_ms is None:
        return state, []
    return state, [_tombstone(state) if state.complete else _alert(state, now_ms)]


def due_ms(state: Expectation) -> int | None:
    """When the entry next needs its owner to `check` it; None: only an input changes it."""
    if state.completed_at_ms is not None:
        return state.completed_at_ms + FORGET_AFTER_MS
    if state.expected_since_ms is None:
        return state.first_seen_ms + FORGET_AFTER_MS
    if state.alerted_at_ms is None:
        return state.deadline_ms
    return state.next_resend_ms


def needs_check(state: Expectation, now_ms: int) -> bool:
    """Whether the owning agent should `check` this entry now."""
    due = due_ms(state)
    return due is not None and now_ms >= due


def check(state: Expectation | None, now_ms: int,
          policy: Policy) -> tuple[Expectation | None, list[OutgoingRecord]]:
    """Re-read by the key's owner: alert once when overdue; resend, bounded, if configured."""
    if state is None or not needs_check(state, now_ms):
        return state, []  # resolved, or already handled, since the scan saw it
    if state.completed_at_ms is not None or state.expected_since_ms is None:
        return None, []  # settled, or an orphan delivery, past its time to keep
    state = replace(state, alerted_at_ms=state.alerted_at_ms or now_ms)
    resends: list[OutgoingRecord] = []
    max_resends = policy.max_resends(state.notification_type)
    if state.resend_attempts < max_resends:
        attempts = state.resend_attempts + 1
        # The next resend waits one SLA more, and only while attempts remain.
        next_ms = now_ms + policy.sla_ms(state.notification_type) if attempts < max_resends else None
        state = replace(state, resend_attempts=attempts, next_resend_ms=next_ms)
        resends = _resends(state, policy.catalog)
    return state, [_alert(state, now_ms), *resends]


def _alert(state: Expectation, now_ms: int) -> OutgoingRecord:
    assert state.expected_since_ms is not None and state.deadline_ms is not None
    record = {"subject_id": state.subject_id, "notification_type": state.notification_type,
              "workspace_id": state.workspace_id,
              "expected_since": _datetime(state.expected_since_ms), "deadline": _datetime(state.deadline_ms),
              "missing_channels": list(state.missing), "delivered_channels": list(state.delivered),
              "detected_at": _datetime(state.alerted_at_ms or now_ms),
              "resend_attempts": state.resend_attempts, "source_event_type": state.event_type,
              "source_event": orjson.dumps(state.event).decode()}
    return OutgoingRecord(MISSING_NOTIFICATIONS, state.key.encode(),
                          encode("herald.MissingNotification", record), _headers(state, "missing"))


def _tombstone(state: Expectation) -> OutgoingRecord:
    return OutgoingRecord(MISSING_NOTIFICATIONS, state.key.encode(), None, _headers(state, "resolved"))


def _resends(state: Expectation, catalog: Catalog) -> list[OutgoingRecord]:
    """The same requests again, same notification ids, for the channels still missing."""
    if state.event_kind not in catalog.events:
        return []  # an entry from before catalogs, or of a kind no longer declared: alert only
    event = event_from_json(state.event, catalog.event_schemas[state.event_kind])
    try:
        requests = notification_requests(catalog, state.event_kind, state.event_type, event)
    except EventLacksField as exc:  # the catalog now reads a field kept events lack: alert only
        log.warning("%s: no resend, the kept %s event has no field %r (the catalog changed since)",
                    state.notification_type, state.event_type, exc.field)
        return []
    records = []
    for request in requests:
        if request["notification_type"] == state.notification_type and request["channel"] in state.missing:
            headers = _headers(state, f"resend.{state.resend_attempts}|{request['channel']}")
            records.append(OutgoingRecord(notification_topic(request["channel"]),
                                          request["notification_id"].encode(),
                                          encode("herald.NotificationRequest", request), headers))
    return records


def _headers(state: Expectation, what: str) -> dict[str, str]:
    # Stable across reprocessing: the same transition of the same expectation, the same event-id.
    source = str(state.event.get("event_id", state.key))
    event_id = derived_event_id(source, f"{state.key}|{what}|{state.resend_attempts}")
    return derived_headers({}, event_id, f"notification.{state.notification_type}.{what.split('.')[0]}")


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _datetime(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)
