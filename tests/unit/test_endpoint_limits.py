"""Back-pressure per endpoint: a busy endpoint's requests wait briefly or are deferred, never
holding up another endpoint's."""

import asyncio
import time

import pytest

from herald.consumers.endpoint_limits import EndpointLimit, EndpointLimiter, LimitedProvider
from herald.consumers.providers import Outcome, ProviderResponse


class GatedProvider:
    """Answers a request once its endpoint's gate opens; records when each was sent."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.sent: list[tuple[str, float]] = []

    def gate(self, endpoint: str) -> asyncio.Event:
        return self.gates.setdefault(endpoint, asyncio.Event())

    async def send(self, request):
        self.sent.append((request["recipient"], time.monotonic()))
        if request["recipient"] in self.gates:
            await self.gates[request["recipient"]].wait()
        return ProviderResponse(Outcome.SENT, message_id=request["notification_id"])

    async def aclose(self) -> None:
        pass


def limited(limit: EndpointLimit) -> tuple[LimitedProvider, GatedProvider, EndpointLimiter]:
    inner, limiter = GatedProvider(), EndpointLimiter(limit)
    provider = LimitedProvider(inner, limiter, limit, lambda r: r["recipient"], "the webhook endpoint")
    return provider, inner, limiter


def request(n: int, endpoint: str) -> dict:
    return {"notification_id": f"n-{n}", "recipient": endpoint}


def test_a_busy_endpoint_queues_its_limit_defers_the_rest_and_others_go_at_once():
    async def scenario():
        provider, inner, limiter = limited(EndpointLimit(in_flight=2, rate_per_s=None, wait_s=5.0))
        slow = inner.gate("https://slow.example/hook")
        held = [asyncio.create_task(provider.send(request(n, "https://slow.example/hook"))) for n in range(4)]
        await asyncio.sleep(0.05)
        extra = await provider.send(request(9, "https://slow.example/hook"))
        other = await asyncio.wait_for(provider.send(request(10, "https://fast.example/hook")), 1.0)
        assert len([s for s in inner.sent if "slow" in s[0]]) == 2, "two in flight, two waiting"
        slow.set()
        answers = await asyncio.gather(*held)
        return extra, other, answers, limiter

    extra, other, answers, limiter = asyncio.run(scenario())
    assert (extra.outcome, extra.error_class, extra.attempted) == (Outcome.RETRYABLE, "EndpointBusy", False)
    assert "slow.example" not in extra.error, "an error never names the URL"
    assert other.outcome is Outcome.SENT, "another endpoint is not held up"
    assert [a.outcome for a in answers] == [Outcome.SENT] * 4, "the queued ones went once there was room"
    assert limiter.counts.deferred == 1 and limiter.counts.waited == 2


def test_a_request_that_waits_longer_than_its_wait_is_deferred():
    async def scenario():
        provider, inner, limiter = limited(EndpointLimit(in_flight=1, rate_per_s=None, wait_s=0.2))
        gate = inner.gate("https://slow.example/hook")
        first = asyncio.create_task(provider.send(request(1, "https://slow.example/hook")))
        await asyncio.sleep(0.01)
        second = await provider.send(request(2, "https://slow.example/hook"))
        gate.set()
        return await first, second, limiter

    first, second, limiter = asyncio.run(scenario())
    assert first.outcome is Outcome.SENT and second.error_class == "EndpointBusy"
    assert limiter.counts.by_endpoint_deferred == {"https://slow.example/hook": 1}


def test_a_rate_spaces_the_sends_and_defers_what_would_wait_too_long():
    async def scenario():
        provider, inner, _limiter = limited(EndpointLimit(in_flight=10, rate_per_s=10.0, wait_s=0.25))
        answers = await asyncio.gather(*(provider.send(request(n, "https://a.example/")) for n in range(5)))
        return answers, inner.sent

    answers, sent = asyncio.run(scenario())
    outcomes = [a.outcome for a in answers]
    assert outcomes[:3] == [Outcome.SENT] * 3, "at 0, 0.1 and 0.2 s: within the wait"
    assert [a.error_class for a in answers[3:]] == ["EndpointBusy"] * 2, "0.3 s and later is too long a wait"
    # On a schedule: the k-th send no earlier than k tenths of a second after the first.
    offsets = [at - sent[0][1] for _endpoint, at in sent]
    assert len(sent) == 3 and all(offset >= k / 10 - 0.002 for k, offset in enumerate(offsets)), offsets


def test_an_idle_endpoint_is_forgotten():
    async def scenario():
        provider, _inner, limiter = limited(EndpointLimit(in_flight=1, rate_per_s=None, wait_s=1.0))
        await asyncio.gather(*(provider.send(request(n, f"https://m{n}.example/")) for n in range(50)))
        return limiter

    assert asyncio.run(scenario())._endpoints == {}


@pytest.mark.parametrize("limit", [dict(in_flight=0, rate_per_s=None, wait_s=1.0),
                                   dict(in_flight=1, rate_per_s=0.0, wait_s=1.0),
                                   dict(in_flight=1, rate_per_s=None, wait_s=0.0)])
def test_a_limit_that_could_never_send_is_refused(limit):
    with pytest.raises(ValueError, match="endpoint limit"):
        EndpointLimit(**limit)


def test_a_request_that_found_room_is_not_counted_as_waiting_however_slow_the_machine():
    ticks = iter(range(0, 1000, 5))  # every reading of the clock five seconds later: a loaded machine

    async def scenario():
        limit = EndpointLimit(in_flight=1, rate_per_s=None, wait_s=60.0)
        limiter = EndpointLimiter(limit, clock=lambda: next(ticks))
        provider = LimitedProvider(GatedProvider(), limiter, limit, lambda r: r["recipient"])
        return await provider.send(request(1, "https://free.example/hook")), limiter

    answer, limiter = asyncio.run(scenario())
    assert answer.outcome is Outcome.SENT
    assert (limiter.counts.waited, limiter.counts.deferred) == (0, 0)
