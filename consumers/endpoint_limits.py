"""Back-pressure per endpoint: how many requests one endpoint has at once, and how fast.

Seed 003's retry storm: one merchant's server slows down, every worker slot fills with
requests waiting on it, and every other merchant waits behind it. Here each endpoint (a
webhook URL, a gateway instance, the channel's one server) has an in-flight limit and an
optional rate. A request waits at most `wait_s` for its endpoint; when it would wait longer,
or the endpoint already has as many waiting as it may have in flight, the request is not
sent but deferred: a retryable outcome (`EndpointBusy`) that is no attempt, so it goes to a
retry tier without using up the notification's attempts, and the worker slot is free for
other endpoints' requests. A slow endpoint so holds at most twice its in-flight limit of a
worker's slots, and only for as long as its own requests need.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from herald.consumers.delivery import Provider
from herald.consumers.providers import Outcome, ProviderResponse

ENDPOINT_BUSY = "EndpointBusy"
_PRUNE_ABOVE = 1024  # endpoints kept only for their rate schedule are forgotten past this many


@dataclass(frozen=True)
class EndpointLimit:
    in_flight: int  # requests one endpoint has at once
    rate_per_s: float | None  # requests per second one endpoint is sent; None: no rate limit
    wait_s: float  # the longest a request waits for its endpoint before it is deferred

    def __post_init__(self) -> None:
        if self.in_flight < 1 or self.wait_s <= 0 or (self.rate_per_s is not None and self.rate_per_s <= 0):
            raise ValueError(f"an endpoint limit needs in_flight >= 1, wait > 0 and rate > 0: {self}")


@dataclass
class _Endpoint:
    slots: asyncio.Semaphore
    waiting: int = 0
    users: int = 0  # holding or waiting for a slot: the entry is dropped when none is left
    next_send_at: float = 0.0  # the rate limit's schedule (monotonic seconds)


@dataclass
class LimitCounts:
    deferred: int = 0
    waited: int = 0  # requests that waited for a slot or for the rate, and were then sent
    by_endpoint_deferred: dict[str, int] = field(default_factory=dict)


class EndpointLimiter:
    """Slots and a send schedule per endpoint key, on one event loop."""

    def __init__(self, limit: EndpointLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self.counts = LimitCounts()

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[bool]:
        """Yields True once the request may go to its endpoint, False when it is deferred."""
        endpoint = self._endpoints.get(key) or self._endpoints.setdefault(
            key, _Endpoint(asyncio.Semaphore(self._limit.in_flight)))
        endpoint.users += 1
        try:
            granted = await self._acquire(endpoint)
            if not granted:
                self._count_deferred(key)
                yield False
                return
            try:
                yield True
            finally:
                endpoint.slots.release()
        finally:
            endpoint.users -= 1
            if not endpoint.users and endpoint.next_send_at <= self._clock():
                self._endpoints.pop(key, None)  # idle, and its rate schedule is behind it
            elif len(self._endpoints) > _PRUNE_ABOVE:
                self._prune()

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._endpoints.items() if not e.users and e.next_send_at <= now]:
            del self._endpoints[key]

    async def _acquire(self, endpoint: _Endpoint) -> bool:
        started = self._clock()
        queued = endpoint.slots.locked()
        if queued:
            if endpoint.waiting >= self._limit.in_flight:
                return False  # a queue as long as the endpoint's work in flight is enough
            endpoint.waiting += 1
            try:
                async with asyncio.timeout(self._limit.wait_s):
                    await endpoint.slots.acquire()
            except TimeoutError:
                return False
            finally:
                endpoint.waiting -= 1
        else:
            await endpoint.slots.acquire()
        paced_s = await self._paced(endpoint, self._limit.wait_s - (self._clock() - started))
        if paced_s is None:
            endpoint.slots.release()
            return False
        # Counted by what happened, not by the clock: a busy machine can take a millisecond
        # between two lines of a request that never waited.
        if queued or paced_s > 0:
            self.counts.waited += 1
        return True

    async def _paced(self, endpoint: _Endpoint, budget_s: float) -> float | None:
        """Take the endpoint's next send time under its rate, if it comes within the budget.

        Returns how long the request waited for its turn, or None when it would wait too long.
        """
        if self._limit.rate_per_s is None:
            return 0.0
        now = self._clock()
        at = max(now, endpoint.next_send_at)
        if at - now > max(budget_s, 0.0):
            return None
        endpoint.next_send_at = at + 1.0 / self._limit.rate_per_s
        if at > now:
            await asyncio.sleep(at - now)
        return at - now

    def _count_deferred(self, key: str) -> None:
        self.counts.deferred += 1
        self.counts.by_endpoint_deferred[key] = self.counts.by_endpoint_deferred.get(key, 0) + 1


def deferred(key_label: str, limit: EndpointLimit) -> ProviderResponse:
    """A request its endpoint had no room for: retried soon, and not counted as an attempt."""
    return ProviderResponse(Outcome.RETRYABLE, error_class=ENDPOINT_BUSY, attempted=False,
                            retry_after_s=limit.wait_s,
                            error=f"{key_label} is at its limit ({limit.in_flight} in flight"
                                  + (f", {limit.rate_per_s:g}/s" if limit.rate_per_s else "")
                                  + "): deferred, not attempted")


class LimitedProvider:
    """A provider whose requests pass their endpoint's limiter first."""

    def __init__(self, provider: Provider, limiter: EndpointLimiter, limit: EndpointLimit,
                 endpoint_of: Callable[[dict[str, Any]], str], label: str = "the endpoint") -> None:
        self._provider = provider
        self._limiter = limiter
        self._limit = limit
        self._endpoint_of = endpoint_of
        self._label = label  # how an error names the endpoint: never its URL, which may be personal

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        async with self._limiter.slot(self._endpoint_of(request)) as granted:
            if not granted:
                return deferred(self._label, self._limit)
            return await self._provider.send(request)

    async def aclose(self) -> None:
        await self._provider.aclose()
