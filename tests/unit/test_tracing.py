"""Spans under the record's trace: off without an OTLP endpoint; on, each stage's span is the
parent of what it writes and of its provider call. Spans land in the SDK's in-memory exporter
here; tests/integration/test_traces.py receives them over OTLP/HTTP from real processes."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from herald.consumers.delivery import ChannelDelivery
from herald.consumers.http_clients import ProviderClient
from herald.consumers.providers import Outcome, ProviderResponse
from herald.infra import tracing
from herald.schemas import headers as h
from herald.schemas.codec import encode
from herald.schemas.records import SourceRecord
from herald.streams.router import Router
from tests.catalogs import example
from tests.unit.test_delivery_handler import POLICY, REQUEST, UNAVAILABLE, ScriptedProvider
from tests.unit.test_router import event, source

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)


def ids(traceparent: str) -> tuple[str, str]:
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return trace_id, span_id


def test_tracing_starts_only_with_an_otlp_endpoint():
    assert not tracing.start_tracing("herald-test", {})
    assert not tracing.start_tracing("herald-test", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                                     "OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled()


def test_a_span_continues_the_records_trace_and_names_itself_for_what_it_writes(spans):
    span = tracing.span_under(PARENT, "route", SpanKind.CONSUMER)
    tracing.end_span(span)
    (finished,) = spans.get_finished_spans()
    assert finished.parent.span_id == int(ids(PARENT)[1], 16)
    assert tracing.traceparent_of(span) == f"00-{ids(PARENT)[0]}-{finished.context.span_id:016x}-01"


@pytest.mark.parametrize("traceparent", [None, "", "00-zz-11-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"])
def test_a_missing_or_malformed_traceparent_starts_a_trace(spans, traceparent):
    tracing.end_span(tracing.span_under(traceparent, "ingest", SpanKind.SERVER))
    (finished,) = spans.get_finished_spans()
    assert finished.parent is None and finished.context.trace_id != 0


def test_routed_requests_carry_the_route_spans_traceparent():
    """The router's loop passes its span; without one, a new span id under the same trace."""
    value = encode("herald.RegistrationEvent", event("payment_verified"))
    routed = Router(example()).route(source(value, {h.TRACEPARENT: PARENT}), traceparent="00-" + "a" * 32
                                     + "-" + "b" * 16 + "-01")
    assert {r.headers[h.TRACEPARENT] for r in routed} == {"00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    untraced = Router(example()).route(source(value, {h.TRACEPARENT: PARENT}))
    assert {ids(r.headers[h.TRACEPARENT])[0] for r in untraced} == {ids(PARENT)[0]}
    assert ids(PARENT)[1] not in {ids(r.headers[h.TRACEPARENT])[1] for r in untraced}


def deliver(provider, headers):
    delivery = ChannelDelivery("email", "g-email", POLICY, provider)
    record = SourceRecord("notifications.email", 0, 7, b"n-1", encode("herald.NotificationRequest", REQUEST),
                          headers)
    return asyncio.run(delivery.handle(record))


def test_a_failed_attempt_is_an_error_span_and_the_parent_of_its_retry_and_status(spans):
    records = deliver(ScriptedProvider(UNAVAILABLE), {h.TRACEPARENT: PARENT})
    (attempt,) = spans.get_finished_spans()
    assert attempt.name == "deliver email" and attempt.kind is SpanKind.CONSUMER
    assert attempt.parent.span_id == int(ids(PARENT)[1], 16)
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["herald.outcome"] == "retryable"
    assert attempt.attributes["error.type"] == "ProviderUnavailable"
    assert {ids(r.headers[h.TRACEPARENT])[1] for r in records} == {f"{attempt.context.span_id:016x}"}


def test_a_sent_attempt_is_not_an_error(spans):
    deliver(ScriptedProvider(ProviderResponse(Outcome.SENT, message_id="m-1")), {h.TRACEPARENT: PARENT})
    (attempt,) = spans.get_finished_spans()
    assert attempt.status.status_code is not StatusCode.ERROR
    assert attempt.attributes["herald.outcome"] == "sent"


def test_the_provider_call_is_a_client_span_under_the_attempt_and_sends_its_traceparent(spans):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) == 1 else 201)

    async def two_calls() -> None:
        client = ProviderClient(httpx.MockTransport(answer), 5.0)
        attempt = tracing.span_under(PARENT, "deliver email", SpanKind.CONSUMER)
        with tracing.activated(attempt):
            await client.post("http://mail.example:8025/v1/send?token=secret", b"{}", {})
            await client.post("http://mail.example:8025/v1/send?token=secret", b"{}", {})
        tracing.end_span(attempt)

    asyncio.run(two_calls())
    *calls, attempt = spans.get_finished_spans()
    assert [c.kind for c in calls] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert all(c.parent.span_id == attempt.context.span_id for c in calls)
    assert [c.attributes["http.response.status_code"] for c in calls] == [503, 201]
    assert calls[0].status.status_code is StatusCode.ERROR
    assert [ids(r.headers["traceparent"])[1] for r in seen] == [f"{c.context.span_id:016x}" for c in calls]
    assert "secret" not in str([dict(c.attributes) for c in calls]), "no path or query in a span"


def test_off_no_span_and_the_provider_call_keeps_the_trace_id(spans):
    tracing.use_provider(None)
    seen: list[httpx.Request] = []
    client = ProviderClient(httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(201)), 5.0)
    records = deliver(ScriptedProvider(ProviderResponse(Outcome.SENT, message_id="m-1")),
                      {h.TRACEPARENT: PARENT})
    asyncio.run(client.post("http://mail.example/v1/send", b"{}", {}))
    assert spans.get_finished_spans() == ()
    assert ids(records[0].headers[h.TRACEPARENT])[0] == ids(PARENT)[0]
