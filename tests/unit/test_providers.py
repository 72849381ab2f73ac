import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from herald.consumers.outcomes import failed_records, status_record
from herald.consumers.providers import IDEMPOTENCY_KEY, HttpProvider, Outcome, classify_status
from herald.consumers.worker import retry_delay_s
from herald.producers.relay import backoff_s
from herald.schemas import headers as h
from herald.schemas.codec import decode
from herald.schemas.records import SourceRecord

REQUEST = {"notification_id": "n-1", "registration_id": "REG-1", "notification_type": "e_ticket",
           "channel": "whatsapp", "recipient": "+62811", "participant_name": "Ani",
           "source_event_id": "e-1", "source_occurred_at": datetime(2026, 1, 1, tzinfo=UTC)}


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.SENT), (201, Outcome.SENT), (408, Outcome.RETRYABLE), (429, Outcome.RETRYABLE),
    (500, Outcome.RETRYABLE), (503, Outcome.RETRYABLE), (400, Outcome.FATAL), (404, Outcome.FATAL),
    (409, Outcome.FATAL), (422, Outcome.FATAL),
])
def test_classify_status(status, outcome):
    assert classify_status(status) is outcome


def send_with(handler):
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await HttpProvider("http://gateway", "whatsapp", client).send(REQUEST)
    return asyncio.run(go())


def test_sends_notification_id_as_idempotency_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"message_id": "m-9"})

    response = send_with(handler)
    assert response.outcome is Outcome.SENT and response.message_id == "m-9"
    assert seen[0].headers[IDEMPOTENCY_KEY] == "n-1"
    assert seen[0].url.path == "/v1/messages"


def test_connection_error_is_retryable():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    response = send_with(handler)
    assert response.outcome is Outcome.RETRYABLE and "ConnectError" in response.error


def test_rejection_keeps_the_provider_reason():
    response = send_with(lambda _r: httpx.Response(422, text="bad phone"))
    assert response.outcome is Outcome.FATAL and response.error == "HTTP 422: bad phone"


def test_backoffs_grow_and_are_capped():
    assert [backoff_s(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_s(100) == 5.0
    assert retry_delay_s(1) < retry_delay_s(2) <= retry_delay_s(50) == 5.0


def test_failed_delivery_yields_a_failed_status_and_a_dead_letter():
    source = SourceRecord("notifications.whatsapp", 1, 5, b"n-1", b"raw", {h.CORRELATION_ID: "c-1"})
    status, dead = failed_records(source, REQUEST, attempts=3, error_class="RetriesExhausted",
                                  error="HTTP 503")
    decoded = decode(status.value).record
    assert status.topic == "notifications.status" and status.key == b"n-1"
    assert (decoded["status"], decoded["attempts"], decoded["error"]) == ("failed", 3, "HTTP 503")
    assert status.headers[h.CORRELATION_ID] == "c-1"
    assert dead.topic == "notifications.whatsapp.dlq" and dead.value == b"raw"
    assert dead.headers[h.ERROR_CLASS] == "RetriesExhausted"


def test_sent_status_carries_the_provider_message_id():
    source = SourceRecord("notifications.whatsapp", 0, 1, b"n-1", b"raw", {})
    record = decode(status_record(source, REQUEST, status="sent", attempts=1, message_id="m-1").value)
    assert record.record["provider_message_id"] == "m-1"
