"""Operators' pauses and rates as a channel's workers see them: the controls read from
channels.control, the gate the workers ask, and the checks a change passes before it is published."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from herald.consumers.channel_controls import (
    CONTROL_SCHEMA,
    ChannelControls,
    ChannelGate,
    ControlState,
    GatedProvider,
)
from herald.consumers.delivery import ChannelDelivery
from herald.consumers.providers import ENDPOINT_PAUSED, Outcome, ProviderResponse
from herald.consumers.retry_policy import Jitter, RetryPolicy
from herald.ops.channel_control import ChangeRequest, ChannelControlError, channel_states
from herald.schemas import headers as h
from herald.schemas.codec import encode
from herald.schemas.records import SourceRecord
from tests.catalogs import example
from tests.unit.test_delivery_handler import REQUEST

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def change(state: str, channel: str = "email", endpoint: str | None = None, rate: float | None = None,
           at: datetime = AT) -> ControlState:
    return ControlState("a1", channel, endpoint, state, rate, "provider down", "ops-ana", at)


def applied(*changes: ControlState) -> ChannelControls:
    controls = ChannelControls()
    for one in changes:
        controls.apply(one.target.encode(), encode(CONTROL_SCHEMA, one.as_record()))
    return controls


def test_the_latest_change_of_a_target_is_its_state():
    controls = applied(change("paused"), change("running", rate=5.0), change("paused", channel="whatsapp"))
    assert not ChannelGate("email", controls).paused
    assert ChannelGate("whatsapp", controls).paused
    assert controls.of("email").rate_per_s == 5.0  # type: ignore[union-attr]


def test_a_record_that_does_not_decode_keeps_the_last_good_state():
    controls = applied(change("paused"))
    controls.apply(b"email", b"not avro")
    assert ChannelGate("email", controls).paused
    assert controls.undecodable == 1


def test_an_endpoint_is_matched_by_its_url_or_its_host_and_port():
    gate = ChannelGate("whatsapp", applied(change("paused", "whatsapp", endpoint="127.0.0.1:8102")))
    assert gate.endpoint_paused("http://127.0.0.1:8102")
    assert not gate.endpoint_paused("http://127.0.0.1:8101")
    assert not gate.paused, "one endpoint paused leaves the channel running"


def test_a_paused_gate_admits_nothing_until_the_resume():
    controls = applied(change("paused"))
    gate = ChannelGate("email", controls)

    async def scenario() -> tuple[bool, bool]:
        waiting = asyncio.create_task(gate.admit())
        await asyncio.sleep(0.3)
        held = not waiting.done()
        controls.apply(b"email", encode(CONTROL_SCHEMA, change("running").as_record()))
        await asyncio.wait_for(waiting, 2)
        return held, waiting.done()

    assert asyncio.run(scenario()) == (True, True)
    assert gate.waited == 1


def test_a_rate_spaces_the_sends_of_the_process():
    now = [100.0]
    gate = ChannelGate("email", applied(change("running", rate=4.0)), clock=lambda: now[0])
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def three() -> None:
        for _ in range(3):
            await gate.admit()

    original = asyncio.sleep
    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        asyncio.run(three())
    finally:
        asyncio.sleep = original  # type: ignore[assignment]
    assert slept == [0.25, 0.5], "at 4/s, the 2nd and 3rd sends wait their turn"


class Recorder:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, request: dict) -> ProviderResponse:
        self.sent += 1
        return ProviderResponse(Outcome.SENT, message_id="m1")

    async def aclose(self) -> None:
        pass


def _source(first_failed_at: datetime) -> SourceRecord:
    value = encode("herald.NotificationRequest", REQUEST)
    return SourceRecord("notifications.email.retry.1", 0, 5, b"n-1", value,
                        {h.FIRST_FAILED_AT: h.iso(first_failed_at), h.ATTEMPT: "1",
                         h.ORIGINAL_TOPIC: "notifications.email"}, None)


def test_a_paused_endpoints_request_is_deferred_unattempted_and_never_dead_lettered_for_its_age():
    provider = Recorder()
    gate = ChannelGate("email", applied(change("paused", endpoint="email")))
    policy = RetryPolicy((5.0, 30.0, 300.0), 1.0, 60.0, Jitter.FULL, max_attempts=5, max_age_s=3600)
    gated = GatedProvider(provider, gate, lambda _request: "email", "the server")
    delivery = ChannelDelivery("email", "g", policy, gated)
    old = datetime.now(UTC) - timedelta(days=2)  # far past the channel's max age of an hour
    records = asyncio.run(delivery.handle(_source(old)))
    assert provider.sent == 0
    assert [r.topic for r in records] == ["notifications.email.retry.2", "notifications.status"], \
        "back in 30 s (the second tier) to look again"
    assert (delivery.counts.deferred, delivery.counts.dead_lettered) == (1, 0)
    assert records[0].headers[h.ATTEMPT] == "1", "no attempt used up"
    assert delivery.counts.by_error_class == {ENDPOINT_PAUSED: 1}


def test_a_change_names_what_is_wrong_with_it():
    with pytest.raises(ChannelControlError) as raised:
        ChangeRequest("sms", None, "paused", " ", "ops-ana").checked(example())
    assert "unknown channel 'sms'; the catalog declares: whatsapp, email" in str(raised.value)
    assert "a pause needs a reason" in str(raised.value)
    with pytest.raises(ChannelControlError, match="a rate is given on a resume only"):
        ChangeRequest("email", None, "running", "", "ops-ana", rate_per_s=0).checked(example())
    checked = ChangeRequest("email", None, "running", "", "ops-ana", rate_per_s=5).checked(example())
    assert (checked.target, checked.rate_per_s, checked.actor) == ("email", 5, "ops-ana")


def test_every_declared_channel_has_a_state():
    history = [change("paused"), change("paused", "whatsapp", endpoint="127.0.0.1:8102"),
               change("running", rate=2.0, at=AT + timedelta(minutes=5))]
    rows = {row["channel"]: row for row in channel_states(example(), history)}
    assert (rows["email"]["state"], rows["email"]["rate_per_s"]) == ("running", 2.0)
    assert rows["whatsapp"]["state"] == "running"
    assert [e["endpoint"] for e in rows["whatsapp"]["paused_endpoints"]] == ["127.0.0.1:8102"]
