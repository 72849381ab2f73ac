"""Pause and resume a channel, or one endpoint or gateway instance of it (`herald channel`, the
API and the console): a change is one record on channels.control, which is also the audit log.

A change is checked here (a channel the catalog declares, a reason for a pause, a positive
rate) and published with the broker's acknowledgment awaited, so a command that returns has
reached every delivery process that follows the topic (within a moment).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from herald.consumers.channel_controls import CONTROL_SCHEMA, ControlState, control_target
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import PublishFailed, produce_confirmed, producer_config
from herald.infra.kafka_views import KafkaUnavailable, all_entries
from herald.schemas import headers as h
from herald.schemas.catalog import CHANNEL_CONTROL, qualified
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import UndecodableRecord, decode_expecting, encode

MAX_REASON = 500
MAX_RATE = 100_000.0


class ChannelControlError(ValueError):
    """A change that cannot be made as asked; the message says what is wrong."""


@dataclass(frozen=True)
class ChangeRequest:
    channel: str
    endpoint: str | None
    state: str  # paused | running
    reason: str
    actor: str
    rate_per_s: float | None = None

    def checked(self, catalog: Catalog) -> ControlState:
        """The change as published, or ChannelControlError naming each problem."""
        problems = []
        if self.channel not in catalog.channels:
            problems.append(f"unknown channel {self.channel!r}; the catalog declares: "
                            f"{', '.join(catalog.channels)}")
        if self.state not in ("paused", "running"):
            problems.append("state must be paused or running")
        if self.state == "paused" and not self.reason.strip():
            problems.append("a pause needs a reason (--reason): the audit log and the console show it")
        if len(self.reason) > MAX_REASON:
            problems.append(f"the reason is longer than {MAX_REASON} characters")
        if self.rate_per_s is not None and (self.state == "paused" or not 0 < self.rate_per_s <= MAX_RATE):
            problems.append(f"a rate is given on a resume only, above 0 and at most {MAX_RATE:g} per second")
        if self.endpoint is not None and (not self.endpoint.strip() or len(self.endpoint) > 300):
            problems.append("an endpoint is a gateway instance's or webhook's host[:port] or URL")
        if problems:
            raise ChannelControlError("; ".join(problems))
        return ControlState(str(uuid.uuid4()), self.channel, self.endpoint or None, self.state,
                            self.rate_per_s, self.reason.strip(), self.actor, datetime.now(UTC))


def publish_change(bootstrap: str, namespace: str, change: ControlState, timeout_s: float = 10.0) -> None:
    """Publish one change and wait for the broker's acknowledgment (KafkaUnavailable if none)."""
    producer = Producer(producer_config(bootstrap, timeout_s))
    record = (qualified(CHANNEL_CONTROL, namespace), change.target.encode(),
              encode(CONTROL_SCHEMA, change.as_record()), {h.EVENT_ID: change.action_id})
    try:
        produce_confirmed(producer, [record], Deadline(timeout_s))
    except PublishFailed as exc:
        raise KafkaUnavailable(f"the change was not published to {CHANNEL_CONTROL}: {exc}") from None


def control_history(bootstrap: str, namespace: str, timeout_s: float = 10.0) -> list[ControlState]:
    """Every change, oldest first (the audit log); records that do not decode are left out."""
    changes = []
    for entry in all_entries(bootstrap, qualified(CHANNEL_CONTROL, namespace), timeout_s):
        try:
            changes.append(ControlState.of(decode_expecting(entry.value, CONTROL_SCHEMA)))
        except (UndecodableRecord, KeyError):
            continue
    return changes


def channel_states(catalog: Catalog, history: list[ControlState]) -> list[dict[str, Any]]:
    """Each declared channel: running or paused (since when, by whom, why), its rate, and its
    paused endpoints."""
    latest = {change.target: change for change in history}
    rows = []
    for channel in catalog.channels:
        own = latest.get(control_target(channel))
        paused_endpoints = [_shown(c) for c in latest.values()
                            if c.channel == channel and c.endpoint and c.paused]
        rows.append({"channel": channel, "state": own.state if own else "running",
                     "rate_per_s": own.rate_per_s if own and not own.paused else None,
                     "last_change": _shown(own) if own else None, "paused_endpoints": paused_endpoints})
    return rows


def _shown(change: ControlState) -> dict[str, Any]:
    return {**change.as_record(), "at": h.iso(change.at), "target": change.target}


def audit_rows(history: list[ControlState], limit: int = 50) -> list[dict[str, Any]]:
    """The newest changes first, as the API and the console show them."""
    return [_shown(change) for change in reversed(history[-limit:])]
