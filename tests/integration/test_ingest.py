"""POST /v1/events against a real database: each status code with its error body, idempotency under
concurrency, and the whole path to Kafka with the broker unreachable at ingest time."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.processes import ProcessGroup, free_port
from herald.producers.ingest import IngestConfig, create_ingest_app
from herald.producers.ingest_events import event_kinds
from herald.producers.signing import sign
from herald.schemas import headers as h
from herald.schemas.tables import OutboxRecord
from tests.catalogs import example
from tests.integration.relay_support import outbox_size, registration_records, running_relay
from tests.support import HERALD, process_env, served_in_thread, wait_until

SECRET = "test-secret"


def event_body(registration_id: str = "REG-1", **data: object) -> bytes:
    document = {"type": "registration.payment_verified", "data": {
        "registration_id": registration_id, "status": "payment_verified", "participant_name": "Wulan",
        "phone": "+6281200000009", "email": "wulan@example.test", "occurred_at": "2026-11-22T10:00:00Z",
        **data}}
    return json.dumps(document).encode()


def signed(body: bytes, secret: str = SECRET, at: float | None = None, **headers: str) -> dict[str, str]:
    return {"Content-Type": "application/json",
            **sign(secret, body, int(at if at is not None else time.time())).as_dict(), **headers}


@pytest.fixture
def client(engine: sa.Engine) -> Iterator[httpx.Client]:
    """The ingest app served by uvicorn in a thread of this process, and a client of it."""
    app = create_ingest_app(engine, IngestConfig(kinds=event_kinds(example()), secrets=("old-secret", SECRET),
                                                 max_body_bytes=4096))
    with served_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield http


def outbox_rows(engine: sa.Engine) -> list[OutboxRecord]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(OutboxRecord).order_by(OutboxRecord.id)))


def test_an_accepted_event_is_in_the_outbox_with_the_request_id_as_correlation_id(client, engine):
    body = event_body()
    response = client.post("/v1/events", content=body, headers=signed(body, **{"X-Request-ID": "req-abc"}))
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == "req-abc"
    answer = response.json()
    assert (answer["key"], answer["topic"]) == ("REG-1", "registrations.events")
    assert answer["request_id"] == "req-abc"
    (row,) = outbox_rows(engine)
    assert row.message_key == "REG-1" and row.headers[h.CORRELATION_ID] == "req-abc"
    assert row.headers[h.EVENT_ID] == answer["event_id"]


def test_a_missing_or_unusable_request_id_is_generated_and_echoed(client, engine):
    generated = []
    for given in (None, "bad id with spaces"):
        body = event_body()
        extra = {"X-Request-ID": given} if given else {}
        response = client.post("/v1/events", content=body, headers=signed(body, **extra))
        assert response.status_code == 202
        generated.append(response.headers["X-Request-ID"])
        assert generated[-1] != given and len(generated[-1]) == 36
    assert [row.headers[h.CORRELATION_ID] for row in outbox_rows(engine)] == generated


@pytest.mark.parametrize(("case", "status", "code", "field"), [
    ("no signature", 401, "missing_signature", None),
    ("wrong secret", 401, "bad_signature", None),
    ("tampered body", 401, "bad_signature", None),
    ("replayed an hour later", 401, "stale_timestamp", None),
    ("too large", 413, "body_too_large", None),
    ("not json", 422, "invalid_json", None),
    ("schema violation", 422, "schema_violation", "data.email"),
    ("unknown type", 422, "unknown_type", "type"),
])
def test_each_rejection_has_its_status_and_a_body_naming_the_problem(client, engine, case, status, code,
                                                                     field):
    body = event_body()
    headers = signed(body)
    if case == "no signature":
        del headers["X-Herald-Signature"]
    elif case == "wrong secret":
        headers = signed(body, secret="guess")
    elif case == "tampered body":
        body = event_body(participant_name="Mallory")
    elif case == "replayed an hour later":
        headers = signed(body, at=time.time() - 3600)
    elif case == "too large":
        body = event_body(participant_name="x" * 5000)
        headers = signed(body)
    elif case == "not json":
        body = b"{oops"
        headers = signed(body)
    elif case == "schema violation":
        body = event_body(email=42)
        headers = signed(body)
    elif case == "unknown type":
        body = json.dumps({"type": "registration.refunded", "data": {}}).encode()
        headers = signed(body)
    response = client.post("/v1/events", content=body, headers={**headers, "X-Request-ID": "req-x"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert error.get("field") == field
    assert response.json()["request_id"] == "req-x"
    assert outbox_rows(engine) == []


def test_the_same_idempotency_key_and_body_returns_the_first_answer_and_writes_nothing(client, engine):
    body = event_body()
    headers = signed(body, **{"Idempotency-Key": "order-1"})
    first = client.post("/v1/events", content=body, headers=headers)
    again = client.post("/v1/events", content=body, headers=signed(body, **{"Idempotency-Key": "order-1"}))
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(outbox_rows(engine)) == 1
    other = event_body(participant_name="Someone Else")
    conflict = client.post("/v1/events", content=other,
                           headers=signed(other, **{"Idempotency-Key": "order-1"}))
    assert conflict.status_code == 409
    assert conflict.json()["error"] == {"code": "idempotency_conflict", "field": "Idempotency-Key",
                                        "message": "this Idempotency-Key was used with a different body"}
    assert len(outbox_rows(engine)) == 1


def test_concurrent_requests_with_one_idempotency_key_write_one_event(client, engine):
    body = event_body()

    def post(_n: int) -> httpx.Response:
        return client.post("/v1/events", content=body, headers=signed(body, **{"Idempotency-Key": "race"}))

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(16)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert len(outbox_rows(engine)) == 1


def test_the_ingest_process_accepts_events_while_kafka_is_unreachable(settings, engine, log_dir):
    port = free_port()
    dead_kafka = f"127.0.0.1:{free_port()}"
    ingest_settings = dataclasses.replace(settings, kafka_bootstrap=dead_kafka, ingest_port=port,
                                          ingest_secrets=f"rotated,{SECRET}")
    url = f"http://127.0.0.1:{port}/v1/events"
    with ProcessGroup(log_dir, process_env(ingest_settings)) as group:
        group.start("ingest", [*HERALD, "ingest"])
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 60, "the ingest API to answer")
        for n in range(20):
            body = event_body(f"HTTP-{n:02d}")
            response = httpx.post(url, content=body, headers=signed(body, **{"X-Request-ID": f"req-{n}"}))
            assert response.status_code == 202, response.text
    assert outbox_size(engine) == 20
    with running_relay(settings) as relay:  # Kafka is back (for the relay): everything goes out
        wait_until(lambda: relay.stats.published == 20, 60, "the relay to publish the ingested events")
    records = registration_records(settings, settings.kafka_bootstrap, 20)
    assert sorted(dict(m.headers())[h.CORRELATION_ID].decode() for m in records) == sorted(
        f"req-{n}" for n in range(20))


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
