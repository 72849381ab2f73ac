"""OpenTelemetry spans under the trace every record carries in its `traceparent` header.

Off unless a process's entry point calls `start_tracing` with the standard
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set and OTEL_SDK_DISABLED
not true. Then the process exports its spans over OTLP/HTTP in batches (the SDK reads the
other OTEL_* variables itself: headers, timeouts, batch delays), and each stage's span is the
parent of what it writes: the records' `traceparent` names that span, and the provider call
sends its own. One notification's spans so form one trace: ingest, relay publish, route, each
delivery attempt, the provider call.

Off, no span is made (the hot loops test one global) and a derived record gets a new span id
under the same trace id, as before, so log lines still find a notification by its trace id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
INSTRUMENTATION = "herald"
_tracer: trace.Tracer | None = None

__all__ = [
    "Span",
    "SpanKind",
    "activated",
    "child_span",
    "enabled",
    "end_span",
    "span_under",
    "start_tracing",
    "traceparent_of",
]


def start_tracing(service: str, environ: Mapping[str, str]) -> bool:
    """Export this process's spans as `service` when the environment asks for it; True if so."""
    wanted = any(environ.get(name) for name in ENDPOINT_VARIABLES)
    if not wanted or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: service, "service.namespace": "herald"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # flushed at exit (atexit)
    trace.set_tracer_provider(provider)
    use_provider(provider)
    return True


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Make Herald's spans with `provider` (None: make none); `start_tracing` calls it, and unit
    tests, with an in-memory exporter."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer(INSTRUMENTATION)


def enabled() -> bool:
    return _tracer is not None


def span_under(traceparent: str | None, name: str, kind: SpanKind,
               attributes: Mapping[str, Any] | None = None, start_ns: int | None = None) -> Span:
    """A span whose parent is the one `traceparent` names; a new trace's root when it names none.
    Only while `enabled()`."""
    assert _tracer is not None, "tracing is off: check enabled() first"
    return _tracer.start_span(name, context=_context_of(traceparent), kind=kind,
                              attributes=dict(attributes or {}), start_time=start_ns)


def child_span(name: str, kind: SpanKind, attributes: Mapping[str, Any] | None = None) -> Span | None:
    """A span under the current one (`activated`), or None when tracing is off or none is current."""
    if _tracer is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    return _tracer.start_span(name, kind=kind, attributes=dict(attributes or {}))


@contextmanager
def activated(span: Span | None) -> Iterator[None]:
    """`span` is the current one inside the block (in this task only), for `child_span`."""
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def end_span(span: Span, error: str | None = None, end_ns: int | None = None,
             attributes: Mapping[str, Any] | None = None) -> None:
    """End `span`, marked failed with `error` (a class name, never personal data) if given."""
    if attributes:
        span.set_attributes(dict(attributes))
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)


def mark_current(outcome: str, error_class: str | None) -> None:
    """Note an outcome (and the error class that failed it) on the current span, if one records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("herald.outcome", outcome)
        if error_class:
            span.set_attribute("error.type", error_class)
            span.set_status(Status(StatusCode.ERROR, error_class))


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span`: the parent of what it writes or calls."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _context_of(traceparent: str | None) -> otel_context.Context:
    """A context whose current span is the remote one `traceparent` names; an empty one (so
    the span starts a trace) when it names none or is malformed."""
    parts = (traceparent or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return otel_context.Context()
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return otel_context.Context()
    if not trace_id or not span_id:
        return otel_context.Context()
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())
