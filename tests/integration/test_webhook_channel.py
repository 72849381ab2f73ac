"""The webhook channel kind against the receiver simulator, a real HTTP server whose endpoints
verify every signature with Standard Webhooks' reference library (`standardwebhooks`)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from herald.consumers.http_clients import delivery_client
from herald.consumers.providers import Outcome
from herald.consumers.webhook import WebhookConfig, WebhookProvider, secret_bytes, webhook_body
from herald.infra.logs import bind
from herald.infra.processes import ProcessGroup
from herald.proving.simulators.receivers import ReceiverProcess

OLD = "whsec_" + base64.b64encode(b"old-secret-of-the-merchants!").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-after-the-rotation").decode()


def request(n: int, endpoint: str) -> dict:
    return {"notification_id": f"n-{n}", "subject_id": f"PAY-{n}", "notification_type": "payment_webhook",
            "channel": "merchants", "recipient": endpoint, "template": "payment_webhook",
            "params": {"payment_id": f"PAY-{n}", "amount": "150000", "currency": "IDR"},
            "source_event_id": f"e-{n}", "source_occurred_at": datetime(2026, 12, 1, tzinfo=UTC),
            "workspace_id": "default", "event_type": "payment.succeeded"}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    receiver = ReceiverProcess.plan("webhook", tmp_path)
    with ProcessGroup(tmp_path / "logs", os.environ) as group:
        receiver.start(group)
        yield receiver


def send_all(provider: WebhookProvider, requests: list[dict]) -> list:
    async def scenario() -> list:
        bind(request_id="req-42", trace_id=None)
        try:
            return list(await asyncio.gather(*(provider.send(r) for r in requests)))
        finally:
            await provider.aclose()
    return asyncio.run(scenario())


def provider(*secrets: str, clock=time.time) -> WebhookProvider:
    return WebhookProvider(WebhookConfig(None, tuple(map(secret_bytes, secrets))),
                           delivery_client(8, 5.0, tls=True), clock=clock)


def test_every_delivery_verifies_with_the_reference_library_and_carries_the_request_id(receiver):
    endpoint = receiver.endpoint("m1", secret=NEW)
    answers = send_all(provider(NEW), [request(n, endpoint) for n in range(30)])
    assert [a.outcome for a in answers] == [Outcome.SENT] * 30
    stats = receiver.stats()
    assert (stats["accepted"], stats["repeats"], stats["bad_signature"]) == (30, 0, 0)
    first = receiver.messages()[0]
    assert first["type"] == "payment.succeeded" and first["request_id"] == "req-42"


def test_a_repeat_keeps_its_webhook_id_so_the_receiver_drops_it(receiver):
    endpoint = receiver.endpoint("m1", secret=NEW)
    send_all(provider(NEW), [request(1, endpoint)])
    send_all(provider(NEW), [request(1, endpoint)])
    stats = receiver.stats()
    assert (stats["accepted"], stats["repeats"]) == (1, 1)


def test_a_tampered_body_and_a_stale_timestamp_are_rejected(receiver):
    endpoint = receiver.endpoint("m1", secret=NEW)
    signer = provider(NEW)
    body = webhook_body(request(1, endpoint))
    headers = signer.signed_headers(request(1, endpoint), body)
    tampered = httpx.post(endpoint, content=body.replace(b"150000", b"950000"), headers=headers, timeout=10)
    assert tampered.status_code == 401
    (stale,) = send_all(provider(NEW, clock=lambda: time.time() - 600), [request(2, endpoint)])
    assert (stale.outcome, stale.status_code) == (Outcome.FATAL, 401)
    untouched = httpx.post(endpoint, content=body, headers=headers, timeout=10)
    assert untouched.status_code == 200, "the same headers verify the body they signed"
    assert receiver.stats()["bad_signature"] == 2 and receiver.stats()["accepted"] == 1


def test_a_secret_rotation_rejects_no_delivery(receiver):
    """During a rotation Herald signs with both secrets: a merchant that rotated (new only) and
    one that has not (old only) both verify every delivery."""
    rotated = receiver.endpoint("rotated", secret=NEW)
    waiting = receiver.endpoint("waiting", secret=OLD)
    answers = send_all(provider(NEW, OLD), [request(n, rotated if n % 2 else waiting) for n in range(20)])
    assert [a.outcome for a in answers] == [Outcome.SENT] * 20
    stats = receiver.stats()
    assert stats["bad_signature"] == 0
    assert {e: r["accepted"] for e, r in stats["by_endpoint"].items()} == {"rotated": 10, "waiting": 10}


def test_answers_are_classified_gone_throttled_unavailable_and_rejected(receiver):
    gone = receiver.endpoint("gone", secret=NEW, gone=True)
    busy = receiver.endpoint("busy", secret=NEW, fail_next=1, status=503, retry_after_s=7)
    throttled = receiver.endpoint("throttled", secret=NEW, fail_next=1, status=429)
    refusing = receiver.endpoint("refusing", secret=NEW, fail_next=1, status=400)
    unknown = receiver.endpoint_url("nobody")
    answers = send_all(provider(NEW), [request(1, gone), request(2, busy), request(3, throttled),
                                       request(4, refusing), request(5, unknown), request(6, "ftp://x")])
    assert [(a.outcome, a.error_class) for a in answers] == [
        (Outcome.FATAL, "EndpointGone"), (Outcome.RETRYABLE, "ProviderUnavailable"),
        (Outcome.RETRYABLE, "ProviderThrottled"), (Outcome.FATAL, "ProviderRejected"),
        (Outcome.FATAL, "ProviderRejected"), (Outcome.FATAL, "InvalidEndpoint")]
    assert answers[1].retry_after_s == 7.0
