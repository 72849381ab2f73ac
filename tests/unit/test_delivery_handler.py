"""What one request becomes: sent, a retry on the right tier with its headers, or a dead letter."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from herald.consumers.delivery import ChannelDelivery
from herald.consumers.providers import Outcome, ProviderResponse
from herald.consumers.retry_policy import Jitter, RetryPolicy
from herald.consumers.smtp import SmtpConfig, SmtpProvider
from herald.schemas import headers as h
from herald.schemas.codec import decode, encode
from herald.schemas.records import SourceRecord
from herald.schemas.templates import TemplateSet

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
REQUEST = {"notification_id": "n-1", "subject_id": "REG-1", "notification_type": "e_ticket",
           "channel": "email", "recipient": "a@example.test",
           "template": "e_ticket", "params": {"name": "Ani"},
           "source_event_id": "e-1", "source_occurred_at": NOW, "workspace_id": "default",
           "event_type": "registration.payment_verified"}
POLICY = RetryPolicy(tiers_s=(5.0, 30.0, 300.0), base_s=5.0, cap_s=300.0, jitter=Jitter.FULL,
                     max_attempts=3, max_age_s=3600.0)


class ScriptedProvider:
    def __init__(self, *responses: ProviderResponse) -> None:
        self.responses = list(responses)
        self.requests: list[dict] = []

    async def send(self, request):
        self.requests.append(request)
        return self.responses.pop(0)

    async def aclose(self) -> None:
        pass


def handle(provider, headers=None, value=None, topic="notifications.email"):
    delivery = ChannelDelivery("email", "g-email", POLICY, provider, clock=lambda: NOW)
    source = SourceRecord(topic, 2, 40, b"n-1", value if value is not None else
                          encode("herald.NotificationRequest", REQUEST),
                          {h.CORRELATION_ID: "c-1", **(headers or {})}, 1_700_000_000_000)
    return delivery, asyncio.run(delivery.handle(source))


UNAVAILABLE = ProviderResponse(Outcome.RETRYABLE, error="HTTP 503: busy", error_class="ProviderUnavailable",
                               status_code=503)


def test_sent_gives_one_status():
    delivery, records = handle(ScriptedProvider(ProviderResponse(Outcome.SENT, message_id="m-1")))
    (status,) = records
    assert decode(status.value).record["status"] == "sent" and delivery.counts.sent == 1


def test_a_retryable_failure_goes_to_a_tier_with_its_attempt_and_due_time():
    _delivery, records = handle(ScriptedProvider(UNAVAILABLE))
    retry, status = records
    assert retry.topic == "notifications.email.retry.1" and retry.key == b"n-1"
    assert decode(retry.value).record == REQUEST, "the request travels unchanged"
    assert retry.headers[h.ATTEMPT] == "1" and retry.headers[h.CORRELATION_ID] == "c-1"
    due = h.parse_iso(retry.headers[h.DUE_AT])
    assert NOW <= due <= NOW + timedelta(seconds=5)
    origin = (retry.headers[h.ORIGINAL_TOPIC], retry.headers[h.ORIGINAL_OFFSET])
    assert origin == ("notifications.email", "40")
    assert retry.headers[h.FIRST_FAILED_AT] == h.iso(NOW)
    assert retry.headers[h.ERROR_CLASS] == "ProviderUnavailable"
    record = decode(status.value).record
    assert (record["status"], record["attempts"], record["due_at"]) == ("retry_scheduled", 1, due)


def test_a_retry_that_fails_again_keeps_where_it_first_failed():
    first_failed = h.iso(NOW - timedelta(seconds=20))
    headers = {h.ATTEMPT: "1", h.ORIGINAL_TOPIC: "notifications.email", h.ORIGINAL_PARTITION: "2",
               h.ORIGINAL_OFFSET: "7", h.ORIGINAL_TIMESTAMP: "5", h.FIRST_FAILED_AT: first_failed,
               h.DUE_AT: h.iso(NOW)}
    _delivery, records = handle(ScriptedProvider(UNAVAILABLE), headers, topic="notifications.email.retry.1")
    retry = records[0]
    assert retry.headers[h.ATTEMPT] == "2"
    assert (retry.headers[h.ORIGINAL_OFFSET], retry.headers[h.FIRST_FAILED_AT]) == ("7", first_failed)


def test_exhausted_attempts_dead_letter_with_the_last_error():
    headers = {h.ATTEMPT: "2", h.ORIGINAL_TOPIC: "notifications.email", h.ORIGINAL_PARTITION: "2",
               h.ORIGINAL_OFFSET: "7", h.FIRST_FAILED_AT: h.iso(NOW)}
    delivery, records = handle(ScriptedProvider(UNAVAILABLE), headers, topic="notifications.email.retry.1")
    dead, status = records
    assert dead.topic == "notifications.email.dlq", "the channel's DLQ, whatever tier it died on"
    assert dead.headers[h.ERROR_CLASS] == "RetriesExhausted" and "HTTP 503" in dead.headers[h.ERROR_MESSAGE]
    assert (dead.headers[h.ATTEMPTS], dead.headers[h.CONSUMER_GROUP]) == ("3", "g-email")
    assert h.DUE_AT not in dead.headers
    assert decode(status.value).record["status"] == "dead_lettered"
    assert delivery.counts.dead_lettered == 1


def test_a_fatal_answer_dead_letters_at_once():
    rejected = ProviderResponse(Outcome.FATAL, error="HTTP 400: bad", error_class="ProviderRejected")
    _delivery, records = handle(ScriptedProvider(rejected))
    dead, status = records
    assert dead.headers[h.ERROR_CLASS] == "ProviderRejected" and dead.headers[h.ATTEMPTS] == "1"
    assert decode(status.value).record["error_class"] == "ProviderRejected"


def test_a_template_that_fails_dead_letters_its_notification_with_the_reason(tmp_path):
    """Rendered before any connection: the one notification goes to the DLQ, nothing is retried,
    and the handler returns (the partition moves on)."""
    (tmp_path / "e_ticket.j2").write_text("{% block text %}{{ seat }}{% endblock %}")
    config = SmtpConfig(host="127.0.0.1", port=1, security="none", sender="h@example.test",
                        username=None, password=None, connections=1, timeout_s=1.0)
    delivery, records = handle(SmtpProvider(config, TemplateSet(tmp_path)))
    dead, status = records
    assert dead.topic == "notifications.email.dlq" and dead.headers[h.ERROR_CLASS] == "TemplateFailed"
    assert "'seat' is undefined" in dead.headers[h.ERROR_MESSAGE]
    assert decode(status.value).record["status"] == "dead_lettered"
    assert (delivery.counts.dead_lettered, delivery.counts.retries_scheduled) == (1, 0)


def test_an_undecodable_record_is_dead_lettered_without_calling_the_provider():
    provider = ScriptedProvider()
    delivery, records = handle(provider, value=b"\x00\x00\x00")
    (dead,) = records
    assert dead.headers[h.ERROR_CLASS] == "UndecodableRecord" and provider.requests == []
    assert delivery.counts.undecodable == 1


def test_a_retry_is_due_at_its_header():
    delivery = ChannelDelivery("email", "g", POLICY, ScriptedProvider(), clock=lambda: NOW)
    source = SourceRecord("t", 0, 0, None, b"", {h.DUE_AT: h.iso(NOW)})
    assert delivery.due_at(source) == NOW
    assert delivery.due_at(SourceRecord("t", 0, 0, None, b"", {})) is None


def test_a_dead_letter_is_logged_with_its_notification_id_reason_and_trace_id(caplog):
    """At INFO an operator sees every dead letter, and its trace id finds the rest of its story."""
    from herald.infra.logs import TRACE_ID

    traces = []

    class KeepTrace(logging.Filter):
        def filter(self, record):
            traces.append(TRACE_ID.get())
            return True

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    rejected = ProviderResponse(Outcome.FATAL, error="HTTP 400: bad address", error_class="ProviderRejected",
                                status_code=400)
    logger, keep = logging.getLogger("herald.consumers.delivery"), KeepTrace()
    logger.addFilter(keep)
    try:
        with caplog.at_level(logging.INFO, "herald.consumers.delivery"):
            handle(ScriptedProvider(rejected), headers={h.TRACEPARENT: traceparent})
    finally:
        logger.removeFilter(keep)
    (line,) = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert line.levelno >= logging.INFO
    assert "n-1" in line.getMessage() and "ProviderRejected: HTTP 400: bad address" in line.getMessage()
    assert traces == ["4bf92f3577b34da6a3ce929d0e0e4736"]


BUSY = ProviderResponse(Outcome.RETRYABLE, error="the webhook endpoint is at its limit",
                        error_class="EndpointBusy", retry_after_s=1.0, attempted=False)


def test_a_deferred_request_is_retried_soon_without_using_an_attempt():
    headers = {h.ATTEMPT: "2", h.RETRY_DELAY_MS: "9000",
               h.FIRST_FAILED_AT: h.iso(NOW - timedelta(seconds=30)), h.ORIGINAL_TOPIC: "notifications.email"}
    delivery, records = handle(ScriptedProvider(BUSY), headers, topic="notifications.email.retry.2")
    retry, status = records
    assert retry.topic == "notifications.email.retry.1", "a one-second deferral goes to the first tier"
    assert retry.headers[h.ATTEMPT] == "2", "not attempted: the count stays"
    assert h.parse_iso(retry.headers[h.DUE_AT]) == NOW + timedelta(seconds=1)
    assert retry.headers[h.RETRY_DELAY_MS] == "9000", "the backoff goes on from the last real attempt"
    record = decode(status.value).record
    assert (record["status"], record["attempts"]) == ("retry_scheduled", 2)
    assert record["error_class"] == "EndpointBusy"
    assert (delivery.counts.deferred, delivery.counts.retries_scheduled) == (1, 0)


def test_a_deferral_past_the_max_age_is_dead_lettered():
    headers = {h.ATTEMPT: "1", h.FIRST_FAILED_AT: h.iso(NOW - timedelta(seconds=3600)),
               h.ORIGINAL_TOPIC: "notifications.email"}
    delivery, records = handle(ScriptedProvider(BUSY), headers, topic="notifications.email.retry.1")
    dead, status = records
    assert dead.topic == "notifications.email.dlq" and dead.headers[h.ERROR_CLASS] == "MaxAgeExceeded"
    assert decode(status.value).record["status"] == "dead_lettered" and delivery.counts.dead_lettered == 1
