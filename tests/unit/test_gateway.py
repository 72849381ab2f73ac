"""The gateway client follows a session that moved, reports a lost one, and probes once per session."""

import asyncio
from datetime import UTC, datetime

import httpx

from herald.consumers.gateway import GatewayProvider
from herald.consumers.http_clients import ProviderClient
from herald.consumers.providers import IDEMPOTENCY_KEY, Outcome
from herald.consumers.session_directory import SessionDirectory
from herald.schemas.codec import decode, encode

A, B = "http://wa-1", "http://wa-2"
REQUEST = {"notification_id": "n-1", "subject_id": "REG-1", "notification_type": "e_ticket",
           "channel": "whatsapp", "recipient": "+62811", "template": "e_ticket", "params": {"name": "Ani"},
           "source_event_id": "e-1", "source_occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
           "workspace_id": "ws-1"}


def directory_with(*sessions):
    directory = SessionDirectory()
    for session_id, workspace, status, instance in sessions:
        event = {"event_id": "e", "session_id": session_id, "workspace_id": workspace, "phone": None,
                 "status": status, "gateway_instance": instance, "metadata": {"note": "x"},
                 "occurred_at": datetime(2026, 1, 1, tzinfo=UTC)}
        directory.apply(session_id.encode(), encode("herald.SessionEvent", event))
    return directory


def send(handler, directory, requests=(REQUEST,)):
    async def go():
        gateway = GatewayProvider((A, B), directory, ProviderClient(httpx.MockTransport(handler), 5))
        try:
            return await asyncio.gather(*(gateway.send(r) for r in requests)), gateway
        finally:
            await gateway.aclose()
    return asyncio.run(go())


def gateways(routes):
    """A handler answering (method, url) from `routes`; a missing entry refuses the connection."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        key = (request.method, str(request.url))
        seen.append((key, request.headers.get(IDEMPOTENCY_KEY)))
        answer = routes.get(key)
        if answer is None:
            raise httpx.ConnectError("refused", request=request)
        return answer
    return handler, seen


def test_sends_from_the_workspaces_connected_session_on_its_instance():
    directory = directory_with(("s-2", "ws-1", "disconnected", B), ("s-1", "ws-1", "connected", A))
    sent = httpx.Response(201, json={"message_id": "m"})
    handler, seen = gateways({("POST", f"{A}/sessions/s-1/messages"): sent})
    ([response], _gateway) = send(handler, directory)
    assert (response.outcome, response.instance, response.follow_ups) == (Outcome.SENT, A, ())
    assert seen == [(("POST", f"{A}/sessions/s-1/messages"), "n-1")]


def test_a_refused_instance_leads_to_the_instance_that_has_the_session():
    directory = directory_with(("s-1", "ws-1", "connected", A))
    handler, _seen = gateways({
        ("GET", f"{B}/sessions/s-1"): httpx.Response(200, json={"status": "connected"}),
        ("POST", f"{B}/sessions/s-1/messages"): httpx.Response(201, json={"message_id": "m"})})
    ([response], gateway) = send(handler, directory)
    assert (response.outcome, response.instance) == (Outcome.SENT, B)
    (correction,) = response.follow_ups
    event = decode(correction.value).record
    assert correction.topic == "sessions.corrections" and correction.key == b"s-1"
    assert (event["gateway_instance"], event["status"]) == (B, "connected")
    assert event["metadata"]["previous_instance"] == A and event["metadata"]["note"] == "x"
    assert directory.get("s-1").instance == B, "the next send goes straight to B"
    assert gateway.rediscovered == 1


def test_a_session_no_instance_has_fails_as_lost():
    directory = directory_with(("s-1", "ws-1", "connected", A))
    handler, _seen = gateways({
        ("POST", f"{A}/sessions/s-1/messages"): httpx.Response(404, json={"error": "not here"}),
        ("GET", f"{A}/sessions/s-1"): httpx.Response(404),
        ("GET", f"{B}/sessions/s-1"): httpx.Response(200, json={"status": "qr_pending"})})
    ([response], _gateway) = send(handler, directory)
    assert (response.outcome, response.error_class) == (Outcome.FATAL, "SessionLost")
    assert response.error.startswith("session lost: reconnect needed")


def test_an_instance_that_did_not_answer_the_probe_keeps_it_retryable():
    directory = directory_with(("s-1", "ws-1", "connected", A))
    handler, _seen = gateways({("GET", f"{B}/sessions/s-1"): httpx.Response(404)})
    ([response], _gateway) = send(handler, directory)
    assert (response.outcome, response.error_class) == (Outcome.RETRYABLE, "ProviderUnreachable")


def test_concurrent_failures_of_one_session_share_one_probe_round():
    directory = directory_with(("s-1", "ws-1", "connected", A))
    handler, seen = gateways({
        ("GET", f"{B}/sessions/s-1"): httpx.Response(200, json={"status": "connected"}),
        ("POST", f"{B}/sessions/s-1/messages"): httpx.Response(201, json={"message_id": "m"})})
    requests = [{**REQUEST, "notification_id": f"n-{i}"} for i in range(5)]
    (responses, gateway) = send(handler, directory, requests)
    assert all(r.outcome is Outcome.SENT for r in responses)
    assert sum(1 for (method, _url), _key in seen if method == "GET") == 2, "one probe per instance"
    assert sum(len(r.follow_ups) for r in responses) == 1 == gateway.rediscovered, "one correction"


def test_a_workspace_without_a_session_is_retried_not_lost():
    handler, _seen = gateways({})
    ([response], _gateway) = send(handler, SessionDirectory())
    assert (response.outcome, response.error_class) == (Outcome.RETRYABLE, "NoSession")


def test_a_tombstone_forgets_the_session():
    directory = directory_with(("s-1", "ws-1", "connected", A))
    directory.apply(b"s-1", None)
    assert directory.sender_for("ws-1") is None and len(directory) == 0


def test_a_requests_endpoint_is_the_instance_its_workspaces_session_is_on():
    gateway = GatewayProvider((A, B), directory_with(("s-1", "ws-1", "connected", B + "/")),
                              ProviderClient(httpx.MockTransport(lambda r: httpx.Response(200)), 5))
    assert gateway.endpoint_of(REQUEST) == B, "the directory's instance, as sends go to it"
    assert gateway.endpoint_of({**REQUEST, "workspace_id": "ws-unknown"}) == A, "else the first"
