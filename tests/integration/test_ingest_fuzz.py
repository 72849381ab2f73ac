"""POST /v1/events fuzzed with correctly signed requests (hypothesis): every body gets a 2xx or a
4xx naming what is wrong, never a 5xx, never a reset connection, and no error echoes the
personal data it was sent. The bodies start from valid events and break them every way JSON
allows: other types and values in each field, limits and one past them, control characters,
deep nesting, extra and missing fields, huge numbers, raw bytes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.producers.ingest import IngestConfig, create_ingest_app
from herald.producers.ingest_events import event_kinds
from herald.producers.signing import sign
from herald.schemas.migrations import scratch_database
from tests.catalogs import example
from tests.integration.conftest import catalog_topics
from tests.support import served_in_thread

SECRET = "fuzz-secret"
# Personal data planted in every body: no answer may carry it back.
CANARIES = {"participant_name": "Canary Wulandari", "phone": "+6281299990042",
            "email": "canary.wulan@example.test"}


@pytest.fixture(scope="module")
def http(endpoints, registry) -> Iterator[httpx.Client]:
    """One server and one kept-alive connection for every example: a reset fails the test.
    The codec is put on this module's own topics: the state an earlier test left it in once
    lacked an event's schema, and the server answered 500."""
    namespace = f"z{uuid.uuid4().hex[:10]}"
    with catalog_topics(endpoints, namespace, registry), \
            scratch_database(endpoints.database_url, namespace) as url:
        engine = sa.create_engine(url, pool_size=4)
        app = create_ingest_app(engine, IngestConfig(kinds=event_kinds(example()), secrets=(SECRET,),
                                                     max_body_bytes=262144))
        try:
            with served_in_thread(app, log_level="critical") as base, \
                    httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
                yield client
        finally:
            engine.dispose()


def registration() -> dict:
    return {"registration_id": "REG-F1", "status": "payment_verified", **CANARIES,
            "occurred_at": "2026-11-22T10:00:00Z", "workspace_id": "w-1"}


def session() -> dict:
    return {"session_id": "webjs_f", "workspace_id": "w-1", "status": "connected",
            "phone": CANARIES["phone"], "gateway_instance": "http://127.0.0.1:18081",
            "metadata": {"reason": CANARIES["participant_name"]}, "occurred_at": 1_795_000_000_000}


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(["", "\x00", "a\nb", "\u202e", "x" * 65, "x" * 201, "x" * 321, "2026-11-22T10:00:00",
                     "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+00:00", "payment_verified", "+62",
                     "not-a-uuid", str(uuid.uuid4())]))


def nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4))


json_values = st.recursive(scalars, nested, max_leaves=12)


@st.composite
def broken_events(draw: st.DrawFn) -> bytes:
    """A valid event, then some of its fields replaced, removed or added, as JSON."""
    kind = draw(st.sampled_from(["registration", "session"]))
    data = registration() if kind == "registration" else session()
    event_type = draw(st.sampled_from(["registration.payment_verified", "registration.created",
                                       "session.connected", "session.updated", "nope", "registration."]))
    for name in draw(st.lists(st.sampled_from([*data, "event_id", "surprise"]), max_size=3, unique=True)):
        action = draw(st.sampled_from(["replace", "remove", "text"]))
        if action == "remove":
            data.pop(name, None)
        elif action == "text":
            data[name] = draw(st.text(min_size=0, max_size=400))
        else:
            data[name] = draw(json_values)
    document: dict = {"type": event_type, "data": data}
    if draw(st.booleans()) and draw(st.booleans()):
        document[draw(st.text(max_size=10))] = draw(json_values)
    return json.dumps(document, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=500, max_value=50_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    inner = opener * depth + b"1" + closer * depth
    return b'{"type": "registration.created", "data": ' + inner + b"}" if draw(st.booleans()) else inner


raw_bodies = st.one_of(st.binary(max_size=300), st.sampled_from([
    b'{"type": "registration.created", "data": {"participant_name": "\\ud800"}}',
    b'{"type": "registration.created", "data": {"occurred_at": NaN}}',
    b'{"type": "registration.created", "data": {"occurred_at": 1e400}}',
    b'{"type": "registration.created", "data": {"occurred_at": 100000000000000000000}}',
    b'"just a string"', b"null", b"",
]))
# What HTTP lets a header carry: latin-1 text without control characters or outer blanks.
header_values = st.one_of(st.none(), st.text(alphabet=st.characters(
    min_codepoint=32, max_codepoint=255, exclude_categories=("Cc",)), max_size=300).map(str.strip))


@given(body=st.one_of(broken_events(), deep_nesting(), raw_bodies), idempotency_key=header_values,
       request_id=header_values)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_signed_body_gets_a_server_error_or_its_personal_data_back(http, body, idempotency_key,
                                                                       request_id):
    signed = sign(SECRET, body, int(time.time())).as_dict()
    headers = [("Content-Type", b"application/json"), *((n, v.encode()) for n, v in signed.items())]
    for name, value in (("Idempotency-Key", idempotency_key), ("X-Request-ID", request_id)):
        if value is not None:
            headers.append((name, value.encode("latin-1")))
    response = http.post("/v1/events", content=body, headers=headers)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json", (response.status_code, response.text)
    if response.status_code == 202:
        return
    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert error["code"] and error["message"], response.text
    assert len(response.content) < 1000, "an error names what is wrong, it does not repeat the input"
    assert not any(canary in response.text for canary in CANARIES.values()), response.text
