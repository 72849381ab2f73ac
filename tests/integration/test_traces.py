"""One trace id finds every log line of one notification: from the signed ingest request,
through the relay, router and delivery worker, to the provider's answer. Each process is a
real `herald` process writing JSON logs; phone numbers and emails never appear whole."""

from __future__ import annotations

import dataclasses
import json
import time

import httpx

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


def test_one_trace_id_finds_the_ingest_request_the_delivery_and_the_provider_call(settings, log_dir):
    traced = dataclasses.replace(settings, log_format="json", log_level="DEBUG", ingest_port=free_port(),
                                 ingest_secrets=SECRET)
    with simulator_network(log_dir, gateway_instances=1, reporting_to=traced) as (network, _sims):
        env = process_env(traced, network)
        with ProcessGroup(log_dir, env) as group:
            for name, argv in (("ingest", ["ingest"]), ("relay", ["relay"]), ("streams", ["streams"]),
                               ("deliver-email", ["deliver", "--channel", "email"])):
                group.start(name, [*HERALD, *argv])
            url = f"http://127.0.0.1:{traced.ingest_port}"
            wait_until(lambda: _answers(f"{url}/healthz"), 60, "the ingest API")
            traceparent = new_traceparent()
            trace_id = traceparent.split("-")[1]
            body = json.dumps({"type": "registration.created", "data": {
                "registration_id": "REG-T1", "status": "created", "participant_name": "Sari",
                "phone": "+6281299990001", "email": "sari@example.test",
                "occurred_at": "2026-11-23T10:00:00Z"}}).encode()
            headers = {"Content-Type": "application/json", "traceparent": traceparent,
                       "X-Request-ID": "req-trace-1", **sign(SECRET, body, int(time.time())).as_dict()}
            answer = httpx.post(f"{url}/v1/events", content=body, headers=headers, timeout=30)
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
