import json
import struct
from datetime import UTC, datetime
from importlib import resources

import fastavro
import pytest
from fastavro.utils import generate_many

from herald.infra.catalogs import example_catalog_path
from herald.schemas.codec import (
    SCHEMA_FILES,
    SchemaViolation,
    UndecodableRecord,
    decode,
    decode_expecting,
    encode,
    encode_derived,
    epoch_time_fields,
    load_schema_json,
    schema_versions,
    upgraded,
    validate_record,
)
from tests.unit.registry_ids import registered_id, written_with


def registration_event(**overrides):
    record = {
        "event_id": "0b0c6f4e-2a43-4a0c-9f54-9d8e2c7c1a11", "registration_id": "REG-1",
        "status": "payment_verified", "participant_name": "Siti", "phone": "+6281234567890",
        "email": "siti@example.test", "occurred_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "workspace_id": "ws-1",
    }
    record.update(overrides)
    return record


def test_round_trip_uses_confluent_framing():
    data = encode("herald.RegistrationEvent", registration_event())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert (magic, schema_id) == (0, registered_id("herald.RegistrationEvent")), "the registry's id"
    decoded = decode(data)
    assert decoded.schema_name == "herald.RegistrationEvent"
    assert decoded.record == registration_event()


def test_invalid_record_names_the_field():
    with pytest.raises(SchemaViolation, match="status"):
        encode("herald.RegistrationEvent", registration_event(status="paid"))
    with pytest.raises(SchemaViolation, match="phone"):
        encode("herald.RegistrationEvent", registration_event(phone=None))


def test_extra_field_is_a_violation():
    with pytest.raises(SchemaViolation, match="surprise"):
        encode("herald.RegistrationEvent", {**registration_event(), "surprise": 1})


@pytest.mark.parametrize(("data", "reason"), [
    (None, "no value"),
    (b"\x00\x00", "shorter than the 5-byte header"),
    (b"{\"json\": true}", "magic byte is 123"),
    (b"\x00\x00\x00\x03\xe7rest", "schema id 999 is unknown to the schema registry"),
])
def test_undecodable_bytes_say_why(data, reason):
    with pytest.raises(UndecodableRecord, match=reason):
        decode(data)


def test_a_corrupt_body_is_undecodable():
    data = struct.pack(">bI", 0, registered_id("herald.RegistrationEvent")) + b"\xff\xff\xff"
    with pytest.raises(UndecodableRecord, match=r"corrupt herald\.RegistrationEvent body"):
        decode(data)


def test_trailing_bytes_are_rejected():
    data = encode("herald.RegistrationEvent", registration_event()) + b"junk"
    with pytest.raises(UndecodableRecord, match="trailing"):
        decode(data)


def test_decode_expecting_rejects_another_schema():
    data = encode("herald.RegistrationEvent", registration_event())
    with pytest.raises(UndecodableRecord, match=r"expected herald\.NotificationRequest"):
        decode_expecting(data, "herald.NotificationRequest")


def test_every_version_of_every_schema_has_an_id_of_its_own():
    ids = [registered_id(name, version) for name in SCHEMA_FILES for version in schema_versions(name)]
    assert len(ids) == len(set(ids)), "an id names one version, forever"


def test_the_newest_history_version_is_the_current_schema():
    for file_name in SCHEMA_FILES.values():
        newest = history_versions(file_name)[-1]
        assert load_schema_json(file_name, history=newest) == load_schema_json(file_name)


def test_data_written_with_an_earlier_version_of_a_catalogs_schema_is_read_as_the_current_one():
    """A v1 RegistrationEvent (no workspace: the example catalog's `earlier_schemas`), written
    with the id the registry gave that version, decodes as the current version, with its default."""
    history = example_catalog_path("registrations").parent / "schemas" / "history"
    v1 = json.loads((history / "registration_event_v1.avsc").read_text())
    v1_record = {k: v for k, v in registration_event().items() if k != "workspace_id"}
    data = written_with("herald.RegistrationEvent", v1, v1_record)
    decoded = decode(data)
    assert decoded.schema_name == "herald.RegistrationEvent"
    assert decoded.record == {**v1_record, "workspace_id": "default"}
    assert decode(data, epoch_times=True).record == {**v1_record, "workspace_id": "default",
                                                     "occurred_at": EPOCH_MS}


def test_a_request_written_before_catalogs_is_read_with_its_template_and_params():
    """Version 2 requests (enums, the participant's name) as the current version (names, template,
    params; no event type: empty)."""
    old = {"notification_id": "n-1", "registration_id": "REG-1", "notification_type": "e_ticket",
           "channel": "email", "recipient": "a@example.test", "participant_name": "Ani",
           "source_event_id": "e-1", "source_occurred_at": datetime(2026, 1, 2, tzinfo=UTC),
           "workspace_id": "ws-1"}
    v2 = load_schema_json("notification_request.avsc", history="v2")
    data = written_with("herald.NotificationRequest", v2, old)
    record = decode_expecting(data, "herald.NotificationRequest")
    assert record == {"notification_id": "n-1", "subject_id": "REG-1", "notification_type": "e_ticket",
                      "channel": "email", "recipient": "a@example.test", "template": "e_ticket",
                      "params": {"name": "Ani"}, "source_event_id": "e-1",
                      "source_occurred_at": datetime(2026, 1, 2, tzinfo=UTC), "workspace_id": "ws-1",
                      "event_type": ""}


def history_versions(file_name):
    folder = resources.files("herald.schemas") / "avro" / "history" / file_name.removesuffix(".avsc")
    return sorted(p.name.removesuffix(".avsc") for p in folder.iterdir() if p.name.endswith(".avsc"))


@pytest.mark.parametrize("schema_name", sorted(SCHEMA_FILES))
def test_the_current_version_reads_data_of_every_historical_version(schema_name):
    """Backward compatibility: data written with any earlier version (with the id the registry
    gave it) decodes as the current one."""
    file_name = SCHEMA_FILES[schema_name]
    versions = history_versions(file_name)
    assert versions, f"{file_name} has no history: copy it to avro/history/ as v1.avsc"
    for version in versions:
        writer = load_schema_json(file_name, history=version)
        for sample in generate_many(fastavro.parse_schema(writer, named_schemas={}), 25):
            data = written_with(schema_name, writer, sample)
            validate_record(schema_name, decode_expecting(data, schema_name))


def test_a_newer_producers_version_is_read_through_avro_schema_resolution():
    """A version this process has never seen (a field added with a default, by a newer
    producer) is fetched by id from the registry once and resolved to the current schema."""
    current = load_schema_json("notification_status.avsc")
    newer = {**current, "fields": [*current["fields"], {"name": "venue", "type": "string", "default": ""}]}
    record = next(iter(generate_many(fastavro.parse_schema(current, named_schemas={}), 1)))
    data = written_with("herald.NotificationStatus", newer, {**record, "venue": "Hall A"})
    decoded = decode_expecting(data, "herald.NotificationStatus")
    assert decoded == decode_expecting(written_with("herald.NotificationStatus", current, record),
                                       "herald.NotificationStatus")


def test_a_field_no_earlier_version_had_and_without_a_default_is_refused():
    current = load_schema_json("notification_status.avsc")
    breaking = {**current, "fields": [*current["fields"], {"name": "venue", "type": "string"}]}
    record = {f["name"]: None for f in current["fields"]}
    with pytest.raises(UndecodableRecord, match="an earlier version has no venue"):
        upgraded(record, breaking)


def test_violation_lists_the_fields_by_their_path_in_the_record():
    with pytest.raises(SchemaViolation) as bad_type:
        encode("herald.RegistrationEvent", registration_event(registration_id=7))
    assert bad_type.value.fields == ("registration_id",)
    with pytest.raises(SchemaViolation) as unknown:
        encode("herald.RegistrationEvent", {**registration_event(), "zeta": 1, "alpha": 2})
    assert unknown.value.fields == ("alpha", "zeta")


EPOCH_MS = 1767323045000  # registration_event()'s occurred_at


def test_epoch_times_read_each_timestamp_as_the_number_written():
    data = encode("herald.RegistrationEvent", registration_event())
    as_numbers = decode_expecting(data, "herald.RegistrationEvent", epoch_times=True)
    assert as_numbers == {**registration_event(), "occurred_at": EPOCH_MS}
    assert decode_expecting(data, "herald.RegistrationEvent") == registration_event(), "others: datetimes"
    assert epoch_time_fields("herald.RegistrationEvent") == {"occurred_at": 1000}


def test_epoch_times_read_nullable_timestamps_and_newer_versions_through_resolution():
    current = load_schema_json("notification_status.avsc")
    newer = {**current, "fields": [*current["fields"], {"name": "venue", "type": "string", "default": ""}]}
    record = next(iter(generate_many(fastavro.parse_schema(current, named_schemas={}), 1)))
    record.update(due_at=None, occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    data = written_with("herald.NotificationStatus", newer, {**record, "venue": "Hall A"})
    decoded = decode_expecting(data, "herald.NotificationStatus", epoch_times=True)
    assert (decoded["due_at"], decoded["occurred_at"]) == (None, EPOCH_MS + 678)
    assert "venue" not in decoded
    assert set(epoch_time_fields("herald.NotificationStatus")) >= {"due_at", "occurred_at"}


def test_a_record_with_epoch_times_encodes_to_the_bytes_of_its_datetimes():
    event = registration_event()
    assert (encode_derived("herald.RegistrationEvent", {**event, "occurred_at": EPOCH_MS}, epoch_times=True)
            == encode("herald.RegistrationEvent", event))
