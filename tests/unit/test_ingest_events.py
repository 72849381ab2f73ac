"""Bodies of POST /v1/events: accepted events, and every rejection naming its field."""

import json
from datetime import UTC, datetime

import pytest

from herald.producers.ingest_events import InvalidEvent, parse_event
from herald.schemas.catalog import REGISTRATION_EVENTS, SESSION_EVENTS


def registration(**data_overrides):
    data = {"registration_id": "REG-7", "status": "payment_verified", "participant_name": "Putri",
            "phone": "+6281234567890", "email": "putri@example.test", "occurred_at": "2026-11-22T10:00:00Z"}
    data.update(data_overrides)
    return {"type": "registration.payment_verified", "data": data}


def parse(document):
    return parse_event(json.dumps(document).encode(), "req-1", None)


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
        parse_event(body, "req-1", None)
    assert rejected.value.code in {"invalid_json", "invalid_event"}
