"""One trace id finds every log line of one notification: from the signed ingest request,
through the relay, router and delivery worker, to the provider's answer. Each process is a
real `herald` process writing JSON logs; phone numbers and emails never appear whole."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from herald.infra.processes import ProcessGroup, free_port
from herald.producers.signing import sign
from herald.schemas.headers import new_traceparent
from tests.support import HERALD, process_env, simulator_network, wait_until

SECRET = "trace-secret"


def json_lines(group_dir) -> list[dict]:
    lines = []
    for path in sorted(group_dir.rglob("*.log")):
        for raw in path.read_text(errors="replace").splitlines():
            if raw.startswith("{\"ts\""):
                lines.append({**json.loads(raw), "file": path.name})
    return lines


def started_stages(group: ProcessGroup, ingest_port: int) -> str:
    """The ingest, relay, router and email worker, started; the ingest's URL once it answers."""
    for name, argv in (("ingest", ["ingest"]), ("relay", ["relay"]), ("streams", ["streams"]),
                       ("deliver-email", ["deliver", "--channel", "email"])):
        group.start(name, [*HERALD, *argv])
    url = f"http://127.0.0.1:{ingest_port}"
    wait_until(lambda: _answers(f"{url}/healthz"), 60, "the ingest API")
    return url


def post_registration(url: str, registration_id: str, phone: str, email: str,
                      headers: dict[str, str]) -> httpx.Response:
    """A signed registration.created, with `headers` (its traceparent)."""
    body = json.dumps({"type": "registration.created", "data": {
        "registration_id": registration_id, "status": "created", "participant_name": "Sari",
        "phone": phone, "email": email, "occurred_at": "2026-11-23T10:00:00Z"}}).encode()
    return httpx.post(f"{url}/v1/events", content=body, timeout=30, headers={
        "Content-Type": "application/json", **headers, **sign(SECRET, body, int(time.time())).as_dict()})


def test_one_trace_id_finds_the_ingest_request_the_delivery_and_the_provider_call(settings, log_dir):
    traced = dataclasses.replace(settings, log_format="json", log_level="DEBUG", ingest_port=free_port(),
                                 ingest_secrets=SECRET)
    with simulator_network(log_dir, gateway_instances=1, reporting_to=traced) as (network, _sims):
        env = process_env(traced, network)
        with ProcessGroup(log_dir, env) as group:
            url = started_stages(group, traced.ingest_port)
            traceparent = new_traceparent()
            trace_id = traceparent.split("-")[1]
            answer = post_registration(url, "REG-T1", "+6281299990001", "sari@example.test",
                                       {"traceparent": traceparent, "X-Request-ID": "req-trace-1"})
            assert answer.status_code == 202 and answer.headers["traceparent"].split("-")[1] == trace_id
            wait_until(lambda: network.accepted("email") >= 1, 120, "the welcome e-mail")
            wait_until(lambda: {"deliver-email.log"} <= {line["file"] for line in json_lines(log_dir)
                                                          if line.get("trace_id") == trace_id},
                       30, "the delivery's log line")
    found = [line for line in json_lines(log_dir) if line.get("trace_id") == trace_id]
    by_file = {line["file"]: line for line in found}
    assert by_file["ingest.log"]["request_id"] == "req-trace-1"
    assert "accepted registration.created for REG-T1" in by_file["ingest.log"]["message"]
    assert "sent to" in by_file["deliver-email.log"]["message"]
    provider = [line for line in found if line["logger"].endswith("simulators.provider")]
    assert provider and "answered 201" in provider[0]["message"], "the provider call carried the trace"
    everything = "\n".join(path.read_text(errors="replace") for path in log_dir.rglob("*.log"))
    assert "sari@example.test" not in everything and "+6281299990001" not in everything, "masked in logs"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint (POST /v1/traces, protobuf) on a loopback port, keeping
    every span it is sent with its process's service name and its instrumentation scope."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, Span]] = []  # (service, scope, span)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver.keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._lock = threading.Lock()

    def keep(self, exported: ExportTraceServiceRequest) -> None:
        for resource_spans in exported.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            with self._lock:
                self.spans += [(service, scope.scope.name, span) for scope in resource_spans.scope_spans
                               for span in scope.spans]

    def __enter__(self) -> OtlpReceiver:
        threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_trace(self, trace_id: str) -> list[tuple[str, str, Span]]:
        with self._lock:
            return [found for found in self.spans if found[2].trace_id.hex() == trace_id]


def attribute(span: Span, key: str) -> object:
    for item in span.attributes:
        if item.key == key:
            return getattr(item.value, item.value.WhichOneof("value"))
    return None


def test_one_notifications_spans_form_one_trace_in_order_across_a_retry(settings, log_dir):
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, the ingest, the relay, the router and the email
    worker export spans to a local OTLP/HTTP endpoint. The provider refuses the first attempt:
    Herald's spans are ingest -> publish -> route -> attempt 1 (failed) -> attempt 2, each
    provider call under its attempt, every one once, each starting after its parent; the
    ingest's is under FastAPI's server span, which is under the caller's."""
    traced = dataclasses.replace(settings, ingest_port=free_port(), ingest_secrets=SECRET)

    def herald_spans() -> list[tuple[str, str, Span]]:  # not FastAPI's own
        return [found for found in receiver.of_trace(trace_id) if found[1] == "herald"]

    with OtlpReceiver() as receiver, simulator_network(log_dir, gateway_instances=1) as (network, _sims):
        env = {**process_env(traced, network), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_BSP_SCHEDULE_DELAY": "200"}
        network.faults(network.email, fail_next=1, status=503)
        with ProcessGroup(log_dir, env) as group:
            url = started_stages(group, traced.ingest_port)
            client = new_traceparent()
            trace_id, client_span = client.split("-")[1:3]
            answer = post_registration(url, "REG-OTEL-1", "+6281299990002", "sari.otel@example.test",
                                       {"traceparent": client})
            assert answer.status_code == 202
            wait_until(lambda: network.accepted("email") >= 1, 120, "the welcome e-mail, retried once")
            wait_until(lambda: len(herald_spans()) >= 7, 30, "every span exported")
            time.sleep(1)  # anything exported twice, or more than expected, arrives meanwhile
    everything = receiver.of_trace(trace_id)
    by_id = {span.span_id: span for _service, _scope, span in everything}
    by_service: dict[str, list[Span]] = {}
    for service, _scope, span in herald_spans():
        by_service.setdefault(service, []).append(span)
    shown = {service: [(s.name, s.span_id.hex(), s.parent_span_id.hex()) for s in spans]
             for service, spans in by_service.items()}
    assert sum(map(len, by_service.values())) == 7, shown
    (ingest,), (publish,), (route,) = by_service["herald-ingest"], by_service["herald-relay"], \
        by_service["herald-router"]
    deliveries = sorted(by_service["herald-deliver-email"], key=lambda s: s.start_time_unix_nano)
    attempts = [s for s in deliveries if s.kind == Span.SpanKind.SPAN_KIND_CONSUMER]
    calls = [s for s in deliveries if s.kind == Span.SpanKind.SPAN_KIND_CLIENT]
    assert len(attempts) == 2 and len(calls) == 2, shown
    server = ingest
    while server.parent_span_id in by_id:  # up through FastAPI's spans to the caller's
        server = by_id[server.parent_span_id]
    assert server.parent_span_id.hex() == client_span and server.kind == Span.SpanKind.SPAN_KIND_SERVER
    chain = [ingest, publish, route, attempts[0], attempts[1]]
    for parent, child in pairwise(chain):
        assert child.parent_span_id == parent.span_id, (parent.name, child.name, shown)
        assert child.start_time_unix_nano >= parent.start_time_unix_nano, (parent.name, child.name)
    for attempt, call in zip(attempts, calls, strict=True):
        assert call.parent_span_id == attempt.span_id
        assert call.start_time_unix_nano >= attempt.start_time_unix_nano
    assert [publish.kind, route.kind] == [Span.SpanKind.SPAN_KIND_PRODUCER, Span.SpanKind.SPAN_KIND_CONSUMER]
    assert [attribute(s, "herald.outcome") for s in attempts] == ["retryable", "sent"]
    assert [attribute(s, "herald.attempt") for s in attempts] == [1, 2]
    assert [attribute(s, "http.response.status_code") for s in calls] == [503, 201]
    assert attempts[0].status.code == attempts[0].status.STATUS_CODE_ERROR
    assert attempts[1].status.code != attempts[1].status.STATUS_CODE_ERROR
    exported = str(everything)
    assert "sari.otel@example.test" not in exported and "6281299990002" not in exported, "no personal data"

