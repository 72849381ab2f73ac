"""The ops API against the real database and broker: the auth matrix of every mutating route
(no token, viewer, operator, revoked), masking by role, and replay over HTTP."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.processes import free_port
from herald.ops.api_tokens import create_token, revoke_token
from herald.producers.sessions import open_session
from herald.schemas.tables import DeadLetter, OutboxRecord
from tests.integration.test_dead_letters import failed_request, index, put_dead_letters
from tests.support import HERALD, process_env, wait_until

MUTATIONS = [
    ("post", "/v1/dlq/{id}/replay", {"to": "original"}),
    ("post", "/v1/dlq/replay", {"all": True, "dry_run": True}),
    ("post", "/v1/dlq/discard", {"ids": [1], "dry_run": True}),
    ("post", "/v1/missing/resend", {"dry_run": True}),
    ("post", "/v1/sessions/s-1/reconnect", None),
]


@pytest.fixture
def api(settings, engine):
    with Session(engine) as session, session.begin():
        tokens = {role: create_token(session, role, role) for role in ("viewer", "operator")}
        tokens["revoked"] = create_token(session, "revoked", "operator")
        revoke_token(session, "revoked")
        open_session(session, session_id="s-1", workspace_id="A", status="connected",
                     gateway_instance="http://127.0.0.1:9/")
    put_dead_letters(settings, [failed_request(n) for n in range(3)])
    index(settings)
    with Session(engine) as session:
        first = min(session.scalars(sa.select(DeadLetter.id)))
    # No stage of the pipeline runs here: health judges the API's own parts only.
    served = dataclasses.replace(settings, api_port=free_port(), health_stages=())
    server = subprocess.Popen([*HERALD, "api"], env=process_env(served), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{served.api_port}", timeout=30)
    try:
        wait_until(lambda: _answers(client), 60, "herald api to listen")
        yield client, tokens, first
    finally:
        client.close()
        server.terminate()
        server.wait(30)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/up").status_code == 200
    except httpx.TransportError:
        return False


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_every_mutating_route_refuses_no_token_a_revoked_one_and_a_viewer(api, method, path, body):
    client, tokens, first = api
    url = path.format(id=first)
    refusals = ((None, 401, "unauthorized"), ("wrong", 401, "unauthorized"),
                (tokens["revoked"], 401, "unauthorized"), (tokens["viewer"], 403, "forbidden"))
    for token, status, error in refusals:
        response = client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code == status, (token, response.text)
        assert response.json()["error"] == error and response.json()["detail"]
    allowed = client.request(method, url, json=body, headers=bearer(tokens["operator"]))
    assert allowed.status_code == 200, allowed.text


def test_reads_need_a_token_and_lists_are_masked_while_an_operator_sees_one_whole(api):
    client, tokens, first = api
    assert client.get("/up").json() == {"status": "up"}, "liveness needs nothing"
    assert client.get("/v1/dlq").status_code == 401
    listed = client.get("/v1/dlq", headers=bearer(tokens["viewer"])).json()
    assert listed["total"] == 3 and "+628120000000" not in json.dumps(listed)
    as_viewer = client.get(f"/v1/dlq/{first}", headers=bearer(tokens["viewer"])).json()
    as_operator = client.get(f"/v1/dlq/{first}", headers=bearer(tokens["operator"])).json()
    assert as_viewer["payload"]["recipient"].startswith("+••••")
    assert as_operator["payload"]["recipient"].startswith("+62812")
    assert client.get("/v1/dlq/999999", headers=bearer(tokens["viewer"])).json()["error"] == "not_found"
    health = client.get("/v1/health", headers=bearer(tokens["viewer"]))
    assert health.status_code == 200 and health.json()["dlq_open"] == {"notifications.whatsapp": 3}


def test_the_catalog_and_its_notification_names_are_what_the_routes_know(api):
    client, tokens, _first = api
    viewer = bearer(tokens["viewer"])
    catalog = client.get("/v1/catalog", headers=viewer).json()
    assert catalog["name"] == "registrations" and list(catalog["channels"]) == ["whatsapp", "email"]
    assert catalog["events"]["registration"]["topic"] == "registrations.events"
    assert catalog["notifications"]["e_ticket"]["sla_s"] == 300.0
    assert "notifications.email" in catalog["dead_letter_topics"]
    unknown = client.get("/v1/missing", params={"notification_type": "refund_notice"}, headers=viewer)
    assert unknown.status_code == 422 and "no notification refund_notice in the catalog" in unknown.text
    resend = client.post("/v1/missing/resend", json={"types": ["refund_notice"], "dry_run": True},
                         headers=bearer(tokens["operator"]))
    assert resend.status_code == 422 and resend.json()["error"] == "unknown_notification"


def test_replay_over_http_reaches_the_outbox_and_the_audit_log(api, engine):
    client, tokens, first = api
    operator = bearer(tokens["operator"])
    bad = client.post("/v1/dlq/replay", json={}, headers=operator)
    assert bad.status_code == 400 and "name dead letters" in bad.json()["detail"]
    done = client.post("/v1/dlq/replay", json={"topic": "whatsapp", "to": "retry"}, headers=operator).json()
    assert done["done"] == 3 and done["target_topics"] == {"notifications.whatsapp.retry.1": 3}
    again = client.post(f"/v1/dlq/{first}/replay", json={}, headers=operator)
    assert again.status_code == 409 and "already replayed (by token:operator" in again.json()["detail"]
    assert client.post("/v1/dlq/999999/replay", json={}, headers=operator).status_code == 404
    (entry,) = client.get("/v1/dlq/audit", headers=bearer(tokens["viewer"])).json()
    assert entry["actor"] == "token:operator" and entry["row_count"] == 3, "nothing replayed, no entry"
    with Session(engine) as session:
        topics = session.scalars(sa.select(OutboxRecord.topic)
                                 .where(OutboxRecord.topic.like("notifications.%")))
        assert list(topics) == ["notifications.whatsapp.retry.1"] * 3


def test_the_openapi_document_is_printed_without_any_service(tmp_path):
    result = subprocess.run([*HERALD, "api", "--openapi"], env={"HERALD_HOME": str(tmp_path), "PATH": ""},
                            capture_output=True, text=True, timeout=60)
    document = json.loads(result.stdout)
    assert document["info"]["title"] == "Herald ops API"
    assert {"/up", "/v1/health", "/v1/dlq", "/v1/dlq/replay", "/v1/sessions/{session_id}/reconnect"} <= set(
        document["paths"])


def test_metrics_show_the_pipeline_without_a_token(api):
    client, _tokens, _first = api
    text = client.get("/metrics").text
    assert 'herald_up{part="database"} 1.0' in text and 'herald_up{part="kafka"} 1.0' in text
    assert 'herald_dlq_open{topic="notifications.whatsapp"} 3.0' in text
    assert "herald_outbox_rows " in text and "herald_outbox_oldest_age_seconds " in text
    assert "herald_stage_up{" not in text, "no stage is needed here (test_health.py checks them)"


def test_a_relay_serves_its_own_metrics(settings, engine, log_dir):
    from herald.infra.processes import ProcessGroup
    from tests.integration.relay_support import write_lifecycles

    port = free_port()
    written = write_lifecycles(engine, 50)
    with ProcessGroup(log_dir, process_env(dataclasses.replace(settings, metrics_port=port))) as group:
        group.start("relay", [*HERALD, "relay"])

        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                return ""

        wait_until(lambda: f"herald_relay_published_total {float(written)}" in scraped(), 60,
                   "the relay's published counter")
        text = scraped()
    assert "herald_relay_commit_to_ack_seconds_count" in text and "herald_relay_owned_shards 32.0" in text
