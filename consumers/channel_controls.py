"""Operators' pauses and resumes of a channel, or of one endpoint of it, as its workers see them.

Seed 003 stops the retry processor while a provider is down and brings workers back
gradually. Here an operator's change is a record on `channels.control`; every delivery
process follows that topic (`TopicFeed`) into `ChannelControls`, and each channel's workers
ask its `ChannelGate`:

- the channel paused: the workers pause their partitions and keep polling, so they keep their
  positions and their place in the group; nothing is sent, nothing dead-lettered, and the
  retry tiers wait too. A request already waiting for its turn waits for the resume.
- one endpoint (a gateway instance, a webhook host) paused: its requests are deferred to a
  retry tier without using an attempt (`EndpointPaused`), so the other endpoints' requests
  keep flowing; the notification's age limit does not apply to a deferral for a pause.
- resumed with a rate: each delivery process of the channel sends at most that many per second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from herald.consumers.delivery import Provider
from herald.consumers.providers import ENDPOINT_PAUSED, Outcome, ProviderResponse
from herald.schemas.codec import UndecodableRecord, decode_expecting

log = logging.getLogger(__name__)
CONTROL_SCHEMA = "herald.ChannelControl"
PAUSED_RECHECK_S = 30.0  # a paused endpoint's request comes back this often to look again
_GATE_POLL_S = 0.05  # how often a request waiting at a paused gate looks again


def control_target(channel: str, endpoint: str | None = None) -> str:
    """The record key: the channel, or '<channel>/<endpoint>'."""
    return f"{channel}/{endpoint}" if endpoint else channel


@dataclass(frozen=True)
class ControlState:
    """One change, and after it the state of its target."""

    action_id: str
    channel: str
    endpoint: str | None
    state: str  # paused | running
    rate_per_s: float | None
    reason: str
    actor: str
    at: datetime

    @property
    def target(self) -> str:
        return control_target(self.channel, self.endpoint)

    @property
    def paused(self) -> bool:
        return self.state == "paused"

    @classmethod
    def of(cls, record: dict[str, Any]) -> ControlState:
        return cls(record["action_id"], record["channel"], record["endpoint"], str(record["state"]),
                   record["rate_per_s"], record["reason"], record["actor"], record["at"])

    def as_record(self) -> dict[str, Any]:
        return {"action_id": self.action_id, "channel": self.channel, "endpoint": self.endpoint,
                "state": self.state, "rate_per_s": self.rate_per_s, "reason": self.reason,
                "actor": self.actor, "at": self.at}


class ChannelControls:
    """The latest change per target, from channels.control. A feed thread writes; the workers
    of every channel read (one dict assignment at a time, so no lock is needed to read)."""

    def __init__(self) -> None:
        self._latest: dict[str, ControlState] = {}
        self.undecodable = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            change = ControlState.of(decode_expecting(value, CONTROL_SCHEMA))
        except (UndecodableRecord, KeyError) as exc:
            self.undecodable += 1  # a bad record must not stop deliveries: the last good state holds
            log.warning("channels.control: a record that does not decode was skipped: %s", exc)
            return
        self._latest = {**self._latest, change.target: change}

    def of(self, target: str) -> ControlState | None:
        return self._latest.get(target)

    def paused_endpoints(self, channel: str) -> list[str]:
        return [s.endpoint for s in self._latest.values()
                if s.channel == channel and s.endpoint and s.paused]


class ChannelGate:
    """One channel's controls, for its workers (each on a thread and event loop of its own)."""

    def __init__(self, channel: str, controls: ChannelControls,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self._controls = controls
        self._clock = clock
        self._next_send_at = 0.0
        self._lock = threading.Lock()  # the send schedule is shared by the process's workers
        self.waited = 0  # requests that waited for a resume or for the rate

    @property
    def paused(self) -> bool:
        state = self._controls.of(self.channel)
        return state is not None and state.paused

    def _rate(self) -> float | None:
        state = self._controls.of(self.channel)
        return state.rate_per_s if state is not None and not state.paused else None

    def endpoint_paused(self, endpoint_key: str) -> bool:
        """Whether an endpoint (a URL, or a name) is paused: by itself or by its host[:port]."""
        paused = self._controls.paused_endpoints(self.channel)
        return bool(paused) and (endpoint_key in paused or urlsplit(endpoint_key).netloc in paused)

    async def admit(self) -> None:
        """Returns when one request may be sent: the channel not paused, and its turn under the rate."""
        if self.paused:
            self.waited += 1
            while self.paused:
                await asyncio.sleep(_GATE_POLL_S)
        rate = self._rate()
        if rate is None:
            return
        with self._lock:
            now = self._clock()
            at = max(now, self._next_send_at)
            self._next_send_at = at + 1.0 / rate
        if at > now:
            self.waited += 1
            await asyncio.sleep(at - now)


def paused_endpoint(label: str) -> ProviderResponse:
    """A request whose endpoint an operator paused: deferred, not attempted."""
    return ProviderResponse(Outcome.RETRYABLE, error_class=ENDPOINT_PAUSED, attempted=False,
                            retry_after_s=PAUSED_RECHECK_S,
                            error=f"{label} is paused by an operator: deferred, not attempted")


class GatedProvider:
    """A provider whose requests pass the channel's gate first."""

    def __init__(self, provider: Provider, gate: ChannelGate, endpoint_of: Callable[[dict[str, Any]], str],
                 label: str) -> None:
        self._provider = provider
        self._gate = gate
        self._endpoint_of = endpoint_of
        self._label = label  # how an error names the endpoint: never its URL, which may be personal

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        await self._gate.admit()
        if self._gate.endpoint_paused(self._endpoint_of(request)):
            return paused_endpoint(self._label)
        return await self._provider.send(request)

    async def aclose(self) -> None:
        await self._provider.aclose()
