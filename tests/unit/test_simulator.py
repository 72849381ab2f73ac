"""The simulators honour Idempotency-Key across a network's instances and count duplicates."""

import asyncio
import sqlite3
import threading

import httpx
import pytest

from herald.proving.simulators.provider import create_simulator
from herald.proving.simulators.store import MessageStore

BODY = {"to": "+62811", "template": "e_ticket", "subject_id": "REG-1", "notification_id": "n-1"}
KEY = {"Idempotency-Key": "n-1"}


def run(apps, calls):
    """Run `calls(*clients)` against in-process simulators (one client per app)."""
    async def go():
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
                   for app in apps]
        try:
            return await calls(*clients)
        finally:
            for client in clients:
                await client.aclose()
    return asyncio.run(go())


@pytest.fixture
def gateway(tmp_path):
    def make(name="wa-1", **options):
        return create_simulator("whatsapp", tmp_path / "whatsapp.sqlite", name=name, **options)
    return make


def test_repeated_key_is_answered_once_and_recorded_once(tmp_path):
    async def calls(client):
        first = await client.post("/v1/emails", json=BODY, headers=KEY)
        again = await client.post("/v1/emails", json=BODY, headers=KEY)
        counter = (await client.get("/_sim/accepted")).json()
        stats = (await client.get("/_sim/stats")).json()
        assert counter == {"accepted": stats["accepted"]}, "the cheap count agrees with the store"
        return first, again, stats

    first, again, stats = run([create_simulator("email", tmp_path / "e.sqlite")], calls)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["message_id"] == again.json()["message_id"]
    assert (stats["accepted"], stats["replays"], stats["duplicates"]) == (1, 1, 0)


def test_same_message_under_another_key_counts_as_a_duplicate(tmp_path):
    async def calls(client):
        await client.post("/v1/emails", json=BODY, headers={"Idempotency-Key": "k-1"})
        await client.post("/v1/emails", json=BODY, headers={"Idempotency-Key": "k-2"})
        return (await client.get("/_sim/stats")).json()

    assert run([create_simulator("email", tmp_path / "e.sqlite")], calls)["duplicates"] == 1


def test_a_gateway_sends_only_from_a_session_it_holds_connected(gateway):
    async def calls(client):
        missing = await client.post("/sessions/s-1/messages", json=BODY, headers=KEY)
        await client.put("/_sim/sessions/s-1", json={"status": "qr_pending"})
        pending = await client.post("/sessions/s-1/messages", json=BODY, headers=KEY)
        await client.put("/_sim/sessions/s-1", json={"status": "connected"})
        sent = await client.post("/sessions/s-1/messages", json=BODY, headers=KEY)
        probe = await client.get("/sessions/s-1")
        return missing, pending, sent, probe

    missing, pending, sent, probe = run([gateway()], calls)
    assert (missing.status_code, pending.status_code, sent.status_code) == (404, 404, 201)
    assert probe.json() == {"session_id": "s-1", "status": "connected", "instance": "wa-1"}


def test_the_key_is_honoured_across_instances_of_one_network(gateway):
    async def calls(first, second):
        for client in (first, second):
            await client.put("/_sim/sessions/s-1", json={"status": "connected"})
        one = await first.post("/sessions/s-1/messages", json=BODY, headers=KEY)
        two = await second.post("/sessions/s-1/messages", json=BODY, headers=KEY)
        return one, two, (await second.get("/_sim/stats")).json()

    one, two, stats = run([gateway("wa-1"), gateway("wa-2")], calls)
    assert (one.status_code, two.status_code) == (201, 200)
    assert (stats["accepted"], stats["duplicates"], stats["by_instance"]) == (1, 0, {"wa-1": 1})


def test_sessions_survive_a_restart_unless_forgotten(gateway, tmp_path):
    sessions = tmp_path / "wa-1.sessions.json"

    async def place(client):
        await client.put("/_sim/sessions/s-1", json={"status": "connected"})

    async def probe(client):
        return (await client.get("/sessions/s-1")).status_code

    run([gateway(sessions_file=sessions)], place)
    assert run([gateway(sessions_file=sessions)], probe) == 200
    assert run([gateway(sessions_file=sessions, forget_sessions=True)], probe) == 404
    assert run([gateway(sessions_file=sessions)], probe) == 404, "forgotten for good"


def test_key_reused_with_another_body_is_a_conflict(tmp_path):
    async def calls(client):
        await client.post("/v1/emails", json=BODY, headers=KEY)
        return await client.post("/v1/emails", json={**BODY, "to": "+62999"}, headers=KEY)

    assert run([create_simulator("email", tmp_path / "e.sqlite")], calls).status_code == 409


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({}, BODY, 400),
    ({"Idempotency-Key": "x"}, {"to": "+62811"}, 422),
])
def test_bad_requests_are_refused_with_a_reason(tmp_path, headers, body, status):
    async def calls(client):
        return await client.post("/v1/emails", json=body, headers=headers)

    response = run([create_simulator("email", tmp_path / "e.sqlite")], calls)
    assert response.status_code == status and response.json()["error"]


def test_injected_failures_then_recovery(tmp_path):
    async def calls(client):
        await client.post("/_sim/faults", json={"fail_next": 2, "status": 503})
        codes = [(await client.post("/v1/emails", json=BODY, headers=KEY)).status_code for _ in range(3)]
        return codes, (await client.get("/_sim/stats")).json()

    codes, stats = run([create_simulator("email", tmp_path / "e.sqlite")], calls)
    assert codes == [503, 503, 201]
    assert (stats["accepted"], stats["rejected"]) == (1, 2)


def test_a_hung_request_is_accepted_after_the_hang(tmp_path):
    async def calls(client):
        await client.post("/_sim/faults", json={"hang_rate": 1.0, "hang_s": 0.05})
        return await client.post("/v1/emails", json=BODY, headers=KEY)

    assert run([create_simulator("email", tmp_path / "e.sqlite")], calls).status_code == 201


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown simulator kind 'sms'"):
        create_simulator("sms", tmp_path / "x.sqlite")


def test_message_posts_take_the_fast_path_and_the_rest_reach_fastapi(gateway, monkeypatch):
    app = gateway()

    async def calls(client):
        await client.put("/_sim/sessions/s-1", json={"status": "connected"})
        sent = await client.post("/sessions/s-1/messages", json=BODY, headers=KEY)
        beyond = await client.post("/sessions/s-1/messages/extra", json=BODY, headers=KEY)
        docs = (await client.get("/openapi.json")).json()
        return sent, beyond, docs

    def refuse(*_args):
        raise AssertionError("a message POST reached FastAPI")

    monkeypatch.setattr(app, "app", _RefusingMessages(app.app, refuse))
    sent, beyond, docs = run([app], calls)
    assert sent.status_code == 201 and sent.headers["content-type"] == "application/json"
    assert sent.json()["status"] == "accepted"
    assert beyond.status_code == 404  # FastAPI's answer: no such route
    assert "/sessions/{session_id}/messages" in docs["paths"]  # still documented


class _RefusingMessages:
    """FastAPI, failing the test if a message POST ever reaches it."""

    def __init__(self, app, refuse):
        self._app, self._refuse = app, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/messages"):
            self._refuse()
        await self._app(scope, receive, send)


def test_instances_opening_a_new_store_together_all_start(tmp_path):
    """Gateway instances of one network open the same new file at once; before the retry, one
    in about 40 such starts (of six) died of "database is locked"."""
    failed: list[sqlite3.OperationalError] = []

    def open_store(path, barrier) -> None:
        barrier.wait()
        try:
            MessageStore(path)
        except sqlite3.OperationalError as exc:
            failed.append(exc)

    for attempt in range(100):
        barrier = threading.Barrier(6)
        openers = [threading.Thread(target=open_store, args=(tmp_path / f"{attempt}.sqlite", barrier))
                   for _ in range(6)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert failed == []
