"""Bodies of POST /v1/events: accepted events, and every rejection naming its field."""

import json
from datetime import UTC, datetime

import pytest

from herald.producers.ingest_events import InvalidEvent, event_kinds, parse_event
from herald.schemas.catalog import SESSION_EVENTS
from tests.catalogs import example

REGISTRATION_EVENTS = "registrations.events"
KINDS = event_kinds(example())


def registration(**data_overrides):
    data = {"registration_id": "REG-7", "status": "payment_verified", "participant_name": "Putri",
            "phone": "+6281234567890", "email": "putri@example.test", "occurred_at": "2026-11-22T10:00:00Z"}
    data.update(data_overrides)
    return {"type": "registration.payment_verified", "data": data}


def parse(document):
    return parse_event(json.dumps(document).encode(), KINDS, "req-1", None)


def test_a_registration_event_becomes_a_keyed_domain_event():
    event = parse(registration())
    assert (event.topic, event.key, event.event_type) == (REGISTRATION_EVENTS, "REG-7",
                                                          "registration.payment_verified")
    assert event.record["occurred_at"] == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert event.correlation_id == "req-1" and len(event.record["event_id"]) == 36


def test_a_session_event_with_epoch_millis():
    event = parse({"type": "session.disconnected", "data": {
        "session_id": "webjs_1_x", "workspace_id": "1", "status": "disconnected",
        "metadata": {"reason": "gateway restart"}, "occurred_at": 1_795_000_000_000}})
    assert (event.topic, event.key) == (SESSION_EVENTS, "webjs_1_x")


@pytest.mark.parametrize(("document", "code", "field"), [
    (registration(phone=None), "schema_violation", "data.phone"),
    (registration(status="paid"), "schema_violation", "data.status"),
    (registration(status="created"), "schema_violation", "data.status"),  # type says payment_verified
    (registration(occurred_at="yesterday"), "schema_violation", "data.occurred_at"),
    (registration(occurred_at="2026-11-22T10:00:00"), "schema_violation", "data.occurred_at"),  # no offset
    (registration(event_id="not-a-uuid"), "schema_violation", "data.event_id"),
    (registration(surprise=1), "schema_violation", "data.surprise"),
    ({**registration(), "type": "registration.paid"}, "unknown_type", "type"),
    ({"data": registration()["data"]}, "invalid_event", "type"),
    ({"type": "registration.payment_verified", "data": []}, "invalid_event", "data"),
    ({**registration(), "extra": 1}, "invalid_event", "extra"),
])
def test_rejections_name_the_field(document, code, field):
    with pytest.raises(InvalidEvent) as rejected:
        parse(document)
    assert (rejected.value.code, rejected.value.field) == (code, field)
    assert field in str(rejected.value)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_rejected(body):
    with pytest.raises(InvalidEvent) as rejected:
        parse_event(body, KINDS, "req-1", None)
    assert rejected.value.code in {"invalid_json", "invalid_event"}


PERSONAL = ("Putri", "+6281234567890", "putri@example.test")


@pytest.mark.parametrize(("document", "field"), [
    (registration(occurred_at=10**20), "data.occurred_at"),  # once an OSError (value too large): 500
    (registration(occurred_at=-1), "data.occurred_at"),
    (registration(occurred_at="9999-12-31T00:00:00Z"), "data.occurred_at"),
    (registration(registration_id="R" * 300), "data.registration_id"),  # the column holds 64
    (registration(registration_id="REG\x00-1"), "data.registration_id"),
    (registration(participant_name="Putri\x00"), "data.participant_name"),  # once accepted and delivered
    (registration(participant_name="Put\nri"), "data.participant_name"),
    (registration(phone="0812-3456"), "data.phone"),
    (registration(email="putri at example.test"), "data.email"),
    (registration(participant_name="P" * 201), "data.participant_name"),
    ({"type": "session.updated", "data": {"session_id": "s", "workspace_id": "1", "status": "connected",
                                          "metadata": {"reason": "x" * 1001}, "occurred_at": 1}},
     "data.metadata"),
])
def test_limits_of_the_database_and_the_providers_are_checked_at_the_door(document, field):
    with pytest.raises(InvalidEvent) as rejected:
        parse(document)
    assert (rejected.value.code, rejected.value.field) == ("schema_violation", field)
    assert field in str(rejected.value)


def test_a_missing_field_is_named_and_nothing_of_the_record_or_the_schema_is_echoed():
    document = registration()
    del document["data"]["participant_name"]
    with pytest.raises(InvalidEvent) as rejected:
        parse(document)
    message = str(rejected.value)
    assert rejected.value.field == "data.participant_name"
    assert message == "data.participant_name is required"
    assert not any(value in message for value in PERSONAL)


@pytest.mark.parametrize("overrides", [
    {"phone": 6281234567890}, {"email": ["putri@example.test"]}, {"status": "Putri"},
    {"putri@example.test": "x"}, {"participant_name": {"first": "Putri"}}])
def test_no_rejection_echoes_the_values_it_was_given(overrides):
    with pytest.raises(InvalidEvent) as rejected:
        parse(registration(**overrides))
    message = str(rejected.value)
    assert not any(value in message for value in PERSONAL), message
    assert "RegistrationEvent" not in message and "symbols" not in message, "nor the schema"


def test_arrays_nested_1000_deep_are_json_but_no_event():
    with pytest.raises(InvalidEvent) as rejected:  # once a RecursionError: 500
        parse_event(b"[" * 1000 + b"]" * 1000, KINDS, "req-1", None)
    assert rejected.value.code == "invalid_event"


@pytest.mark.parametrize("body", [
    b"[" * 2000 + b"]" * 2000,
    b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    b'{"type": "registration.created", "data": {"participant_name": "\\ud800"}}',  # a lone surrogate
    b'{"type": "registration.created", "data": {"occurred_at": NaN}}',
])
def test_bodies_json_cannot_hold_are_invalid_json(body):
    with pytest.raises(InvalidEvent) as rejected:
        parse_event(body, KINDS, "req-1", None)
    assert rejected.value.code == "invalid_json"


def test_the_accepted_kinds_are_the_catalogs_and_the_gateway_sessions():
    assert set(KINDS) == {"registration", "session"}
    tasks = event_kinds(example("tasks"))
    assert set(tasks) == {"task"}, "no whatsapp-gateway channel: no session events"
    event = parse_event(json.dumps({"type": "task.assigned", "data": {
        "task_id": "T-1", "task_title": "Review", "user_id": "42", "user_email": "a@example.test",
        "role_name": "reviewer", "action": "assigned", "occurred_at": 1_795_000_000_000}}).encode(),
        tasks, "req-1", None)
    assert (event.topic, event.key, event.event_type) == ("task.events", "T-1", "task.assigned")
    with pytest.raises(InvalidEvent) as raised:
        parse_event(json.dumps(registration()).encode(), tasks, "req-1", None)
    assert raised.value.code == "unknown_type"
    assert "accepted: task.assigned, task.reassigned" in str(raised.value)


def test_the_openapi_document_has_a_request_body_per_event_type_of_the_catalog():
    from herald.producers.ingest import IngestConfig, create_ingest_app

    document = create_ingest_app(None, IngestConfig(kinds=event_kinds(example("tasks")),  # type: ignore[arg-type]
                                                    secrets=("s",))).openapi()
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    (assigned,) = [b for b in body["oneOf"] if b["title"] == "task.assigned"]
    data = assigned["properties"]["data"]
    assert assigned["properties"]["type"]["enum"] == ["task.assigned"]
    assert data["properties"]["action"] == {"type": "string", "enum": ["assigned", "reassigned"]}
    assert data["properties"]["task_title"]["maxLength"] == 255
    assert "event_id" not in data["required"] and "user_email" in data["required"]
    assert [b["title"] for b in body["oneOf"]] == ["task.assigned", "task.reassigned"]
