import asyncio

import httpx
import pytest

from herald.infra.simulators.provider import create_simulator

BODY = {"to": "+62811", "template": "e_ticket", "registration_id": "REG-1", "notification_id": "n-1"}


def run(kind, calls):
    """Run `calls(client)` against an in-process simulator; returns its result."""
    async def go():
        transport = httpx.ASGITransport(app=create_simulator(kind))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            return await calls(client)
    return asyncio.run(go())


def test_repeated_key_is_answered_once_and_recorded_once():
    async def calls(client):
        first = await client.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "n-1"})
        again = await client.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "n-1"})
        return first, again, (await client.get("/_sim/stats")).json()

    first, again, stats = run("whatsapp", calls)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["message_id"] == again.json()["message_id"]
    assert stats == {"kind": "whatsapp", "accepted": 1, "replays": 1, "rejected": 0, "duplicates": 0}


def test_same_message_under_another_key_counts_as_a_duplicate():
    async def calls(client):
        await client.post("/v1/emails", json=BODY, headers={"Idempotency-Key": "k-1"})
        await client.post("/v1/emails", json=BODY, headers={"Idempotency-Key": "k-2"})
        return (await client.get("/_sim/stats")).json()

    assert run("email", calls)["duplicates"] == 1


def test_key_reused_with_another_body_is_a_conflict():
    async def calls(client):
        await client.post("/v1/messages", json=BODY, headers={"Idempotency-Key": "n-1"})
        return await client.post("/v1/messages", json={**BODY, "to": "+62999"},
                                 headers={"Idempotency-Key": "n-1"})

    assert run("whatsapp", calls).status_code == 409


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({}, BODY, 400),
    ({"Idempotency-Key": "x"}, {"to": "+62811"}, 422),
])
def test_bad_requests_are_refused_with_a_reason(headers, body, status):
    async def calls(client):
        return await client.post("/v1/messages", json=body, headers=headers)

    response = run("whatsapp", calls)
    assert response.status_code == status and response.json()["error"]


def test_injected_failures_then_recovery():
    async def calls(client):
        await client.post("/_sim/faults", json={"fail_next": 2, "status": 503})
        codes = [(await client.post("/v1/messages", json=BODY,
                                    headers={"Idempotency-Key": "n-1"})).status_code for _ in range(3)]
        return codes, (await client.get("/_sim/stats")).json()

    codes, stats = run("whatsapp", calls)
    assert codes == [503, 503, 201]
    assert (stats["accepted"], stats["rejected"]) == (1, 2)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown simulator kind 'sms'"):
        create_simulator("sms")
