import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest

from herald.consumers.http_clients import ProviderClient
from herald.consumers.outcomes import status_record
from herald.consumers.providers import (
    EMAIL_API,
    IDEMPOTENCY_KEY,
    HttpProvider,
    Outcome,
    classify_status,
    retry_after_s,
)
from herald.producers.relay import backoff_s
from herald.schemas import headers as h
from herald.schemas.codec import decode
from herald.schemas.records import SourceRecord

REQUEST = {"notification_id": "n-1", "subject_id": "REG-1", "notification_type": "e_ticket",
           "channel": "whatsapp", "recipient": "+62811", "template": "e_ticket", "params": {"name": "Ani"},
           "source_event_id": "e-1", "source_occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
           "workspace_id": "default"}


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.SENT), (201, Outcome.SENT), (408, Outcome.RETRYABLE), (429, Outcome.RETRYABLE),
    (500, Outcome.RETRYABLE), (503, Outcome.RETRYABLE), (400, Outcome.FATAL), (404, Outcome.FATAL),
    (409, Outcome.FATAL), (422, Outcome.FATAL),
])
def test_classify_status(status, outcome):
    assert classify_status(status) is outcome


def send_with(handler):
    async def go():
        provider = HttpProvider("http://provider", EMAIL_API, ProviderClient(httpx.MockTransport(handler), 5))
        try:
            return await provider.send(REQUEST)
        finally:
            await provider.aclose()
    return asyncio.run(go())


def test_sends_notification_id_as_idempotency_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"message_id": "m-9"})

    response = send_with(handler)
    assert response.outcome is Outcome.SENT and response.message_id == "m-9"
    assert seen[0].headers[IDEMPOTENCY_KEY] == "n-1"
    assert seen[0].url.path == "/v1/emails"
    assert seen[0].headers["Content-Type"] == "application/json"
    assert seen[0].headers["User-Agent"] == "herald-delivery"
    assert json.loads(seen[0].content) == {
        "to": REQUEST["recipient"], "template": REQUEST["template"],
        "subject_id": REQUEST["subject_id"], "notification_id": "n-1", "params": REQUEST["params"]}
    assert seen[0].extensions["timeout"] == {"connect": 5, "read": 5, "write": 5, "pool": 5}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]"])
def test_an_unreadable_acceptance_is_sent_without_a_message_id(body):
    response = send_with(lambda _r: httpx.Response(201, content=body))
    assert response.outcome is Outcome.SENT and response.message_id is None


def test_connection_error_is_retryable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    response = send_with(handler)
    assert response.outcome is Outcome.RETRYABLE and "ConnectError" in response.error


def test_rejection_keeps_the_provider_reason():
    response = send_with(lambda _r: httpx.Response(422, text="bad phone"))
    assert response.outcome is Outcome.FATAL and response.error == "HTTP 422: bad phone"




def test_sent_status_carries_the_provider_message_id():
    source = SourceRecord("notifications.whatsapp", 0, 1, b"n-1", b"raw", {})
    record = decode(status_record(source, REQUEST, status="sent", attempts=1, message_id="m-1").value)
    assert record.record["provider_message_id"] == "m-1"


def test_a_scheduled_retry_status_says_when_and_why():
    source = SourceRecord("notifications.whatsapp", 0, 1, b"n-1", b"raw", {h.CORRELATION_ID: "c-1"})
    due = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    status = status_record(source, REQUEST, status="retry_scheduled", attempts=2, error="HTTP 503",
                           error_class="ProviderUnavailable", due_at=due)
    record = decode(status.value).record
    assert (record["status"], record["attempts"], record["due_at"], record["error_class"]) == (
        "retry_scheduled", 2, due, "ProviderUnavailable")
    assert status.key == b"n-1" and status.headers[h.CORRELATION_ID] == "c-1"


@pytest.mark.parametrize(("status", "error_class"), [
    (429, "ProviderThrottled"), (408, "ProviderTimeout"), (503, "ProviderUnavailable"),
    (400, "ProviderRejected"), (404, "ProviderRejected"),
])
def test_each_failure_names_its_class(status, error_class):
    response = send_with(lambda _r: httpx.Response(status, text="no"))
    assert response.error_class == error_class and response.status_code == status


def test_a_timeout_is_retryable_and_named():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    response = send_with(handler)
    assert (response.outcome, response.error_class) == (Outcome.RETRYABLE, "ProviderTimeout")


def test_retry_after_is_read_as_seconds_or_as_a_date():
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Sun, 22 Nov 2026 10:00:30 GMT", now) == 30.0
    assert retry_after_s("Sun, 22 Nov 2026 09:00:00 GMT", now) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    throttled = send_with(lambda _r: httpx.Response(429, headers={"Retry-After": "7"}))
    assert (throttled.outcome, throttled.retry_after_s) == (Outcome.RETRYABLE, 7.0)


def test_relay_backoff_grows_and_is_capped():
    assert [backoff_s(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_s(100) == 5.0

