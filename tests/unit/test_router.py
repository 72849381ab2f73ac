from datetime import UTC, datetime

import pytest

from herald.schemas import headers as h
from herald.schemas.codec import decode, encode, encode_derived
from herald.schemas.ids import notification_id
from herald.schemas.records import SourceRecord
from herald.streams.router import Router
from herald.streams.rules import notification_requests
from tests.catalogs import example, written_catalog

OCCURRED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def event(status="payment_verified", registration_id="REG-7"):
    return {"event_id": "7d3c1c1e-0f7e-4c55-8f0a-1c2b3d4e5f60", "registration_id": registration_id,
            "status": status, "participant_name": "Budi", "phone": "+628111", "email": "budi@example.test",
            "occurred_at": OCCURRED, "workspace_id": "ws-9"}


def source(value, headers=None):
    return SourceRecord("registrations.events", 3, 42, b"REG-7", value, headers or {})


def route(record):
    return Router(example()).route(record)


def requests_for(status, catalog=None):
    return notification_requests(catalog or example(), "registration", f"registration.{status}",
                                 event(status))


def test_notification_id_is_deterministic_and_distinct_per_channel():
    assert notification_id("REG-7", "e_ticket", "email") == notification_id("REG-7", "e_ticket", "email")
    assert notification_id("REG-7", "e_ticket", "email") != notification_id("REG-7", "e_ticket", "whatsapp")
    assert notification_id("REG-7", "e_ticket", "email") != notification_id("REG-8", "e_ticket", "email")


def test_payment_verified_becomes_an_e_ticket_per_channel():
    requests = requests_for("payment_verified")
    assert {(r["channel"], r["recipient"]) for r in requests} == {("whatsapp", "+628111"),
                                                                 ("email", "budi@example.test")}
    assert all(r["notification_type"] == "e_ticket" for r in requests)
    assert all(r["workspace_id"] == "ws-9" for r in requests), "the tenant's session sends it"
    assert all(r["notification_id"] == notification_id("REG-7", "e_ticket", r["channel"]) for r in requests)
    assert all((r["template"], r["params"]) == ("e_ticket", {"name": "Budi"}) for r in requests)


def test_each_status_becomes_its_notification_on_the_channels_the_catalog_names():
    expected = {"created": {("welcome", "email", "budi@example.test")},
                "payment_uploaded": {("upload_confirmation", "whatsapp", "+628111")},
                "payment_verified": {("e_ticket", "whatsapp", "+628111"),
                                     ("e_ticket", "email", "budi@example.test")}}
    for status, notifications in expected.items():
        requests = requests_for(status)
        assert {(r["notification_type"], r["channel"], r["recipient"]) for r in requests} == notifications
        assert all(r["notification_id"] == notification_id("REG-7", r["notification_type"], r["channel"])
                   for r in requests)


def test_guards_templates_and_params_come_from_the_catalog(tmp_path):
    def change(document):
        ticket = document["notifications"]["e_ticket"]
        ticket.update(when={"workspace_id": ["ws-9", "ws-10"]}, template="eticket_v2",
                      params={"who": "participant_name", "at": "occurred_at", "ref": "registration_id"})
        document["notifications"]["vip"] = {"trigger": ["registration.payment_verified"],
                                            "when": {"workspace_id": "ws-1"},
                                            "channels": {"email": {"to": "email"}}}
    _path, catalog = written_catalog(tmp_path, change)
    (request, *_rest) = requests_for("payment_verified", catalog)
    assert request["template"] == "eticket_v2"
    assert request["params"] == {"who": "Budi", "at": "2026-03-01T08:00:00.000+00:00", "ref": "REG-7"}
    assert {r["notification_type"] for r in requests_for("payment_verified", catalog)} == {"e_ticket"}


def test_routed_requests_are_byte_for_byte_the_requests_the_rules_make():
    """The router reads timestamps as numbers (no datetime per event): what it writes is what
    encoding the rules' requests for the event read with datetimes writes."""
    for status in ("created", "payment_uploaded", "payment_verified"):
        routed = route(source(encode("herald.RegistrationEvent", event(status))))
        expected = [encode_derived("herald.NotificationRequest", r) for r in requests_for(status)]
        assert [r.value for r in routed] == expected
        assert all(decode(r.value).record["source_occurred_at"] == OCCURRED for r in routed)


def test_a_timestamp_a_template_reads_is_text_and_the_request_keeps_its_time(tmp_path):
    def change(document):
        document["notifications"]["e_ticket"]["params"] = {"at": "occurred_at", "who": "participant_name"}
    _path, catalog = written_catalog(tmp_path, change)
    routed = Router(catalog).route(source(encode("herald.RegistrationEvent", event())))
    assert len(routed) == 2
    for record in routed:
        request = decode(record.value).record
        assert request["params"] == {"at": "2026-03-01T08:00:00.000+00:00", "who": "Budi"}
        assert request["source_occurred_at"] == OCCURRED


def test_route_encodes_requests_keyed_by_notification_id_with_contract_headers():
    incoming = {h.CORRELATION_ID: "req-123", h.TRACEPARENT: h.new_traceparent("ab" * 16)}
    out = route(source(encode("herald.RegistrationEvent", event()), incoming))
    assert sorted(r.topic for r in out) == ["notifications.email", "notifications.whatsapp"]
    for record in out:
        request = decode(record.value).record
        assert record.key == request["notification_id"].encode()
        assert record.headers[h.CORRELATION_ID] == "req-123"
        assert h.trace_id_of(record.headers[h.TRACEPARENT]) == "ab" * 16
        assert set(record.headers) >= {h.EVENT_ID, h.EVENT_TYPE, h.PRODUCED_AT}


def test_reprocessing_gives_the_same_event_ids():
    value = encode("herald.RegistrationEvent", event())
    first = {r.topic: r.headers[h.EVENT_ID] for r in route(source(value))}
    again = {r.topic: r.headers[h.EVENT_ID] for r in route(source(value))}
    assert first == again


def test_poison_record_goes_to_the_dead_letter_topic_with_its_reason():
    out = route(source(b"not avro", {h.EVENT_ID: "e1"}))
    assert len(out) == 1
    dead = out[0]
    assert dead.topic == "registrations.events.dlq"
    assert dead.value == b"not avro" and dead.key == b"REG-7"
    assert dead.headers[h.ERROR_CLASS] == "UndecodableRecord"
    assert "magic byte" in dead.headers[h.ERROR_MESSAGE]
    assert (dead.headers[h.ORIGINAL_TOPIC], dead.headers[h.ORIGINAL_PARTITION],
            dead.headers[h.ORIGINAL_OFFSET]) == ("registrations.events", "3", "42")
    assert dead.headers[h.EVENT_ID] == "e1"


def test_an_event_type_its_kind_does_not_declare_is_dead_lettered(tmp_path):
    declared = {**event(), "status": "created"}
    value = encode("herald.RegistrationEvent", declared)
    record = SourceRecord("registrations.events", 0, 1, b"REG-7", value,
                          {h.EVENT_TYPE: "registration.refunded"})
    assert [r.topic for r in route(record)] == ["notifications.email"], "the type field decides then"

    def without_type_field(document):
        document["events"]["registration"]["type_field"] = None
    _path, catalog = written_catalog(tmp_path, without_type_field)
    (dead,) = Router(catalog).route(record)
    assert (dead.topic, dead.headers[h.ERROR_CLASS]) == ("registrations.events.dlq", "UnknownEventType")


def test_a_bug_dead_letters_the_record_instead_of_crash_looping(monkeypatch, caplog):
    def broken_rules(*_args):
        raise ZeroDivisionError("rule table bug")

    monkeypatch.setattr("herald.streams.router.notification_requests", broken_rules)
    out = route(source(encode("herald.RegistrationEvent", event())))
    assert [r.topic for r in out] == ["registrations.events.dlq"]
    assert out[0].headers[h.ERROR_CLASS] == "ZeroDivisionError"
    assert "rule table bug" in out[0].headers[h.ERROR_MESSAGE]
    assert "router failed" in caplog.text


@pytest.mark.parametrize(("processor", "tables"), [
    ("missing", {"missing-expectations"}), ("sessions", {"session-entries"}),
    ("status", {"status-partials", "status-totals", "status-seen"})])
def test_each_processors_changelog_topics_are_known_before_its_worker_starts(processor, tables):
    from herald.infra.settings import Settings
    from herald.ops.bootstrap import streams_config
    from herald.streams.app import changelog_topics, create_app

    app = create_app(streams_config(Settings.from_environ({"HERALD_NAMESPACE": "n1"}), example()),
                     "127.0.0.1:1", processor)
    specs = changelog_topics(app)
    prefix = f"n1.herald-streams-{processor}"
    assert {s.name for s in specs} == {f"{prefix}-{t}-changelog" for t in tables}
    assert all((s.partitions, s.cleanup_policy) == (6, "compact") for s in specs)
    # Rolled every 10 minutes, so compaction reaches them and a restart replays live entries.
    assert all(s.config()["segment.ms"] == "600000" for s in specs)


def test_the_missing_policy_takes_each_notifications_sla_and_resends_from_the_catalog(tmp_path):
    from herald.infra.settings import Settings
    from herald.ops.bootstrap import streams_config
    from herald.streams.missing import Policy

    def change(document):
        document["notifications"]["e_ticket"].update(sla="90s", resends=2)
    _path, catalog = written_catalog(tmp_path, change)
    config = streams_config(Settings.from_environ({}), catalog)
    policy = Policy(config.catalog)
    assert (policy.sla_ms("e_ticket"), policy.max_resends("e_ticket")) == (90_000, 2)
    assert (policy.sla_ms("welcome"), policy.max_resends("welcome")) == (900_000, 0)
    assert policy.max_resends("no_longer_declared") == 0
    assert config.group("missing") == "herald-streams-missing"


def test_a_faust_worker_reads_committed_records_only_and_waits_for_a_batch():
    """Off a notification's first path: the broker holds a fetch until 200 ms or 64 KiB."""
    import asyncio

    import aiokafka

    from herald.infra.kafka_io import OFF_PATH_FETCH_MIN_BYTES, OFF_PATH_FETCH_WAIT_MS
    from herald.streams.faust_kafka import committed_batches

    async def settings_at_start() -> tuple[str, int, int]:
        consumer = committed_batches(aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1"))
        try:
            return consumer._isolation_level, consumer._fetch_min_bytes, consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(settings_at_start()) == \
        ("read_committed", OFF_PATH_FETCH_MIN_BYTES, OFF_PATH_FETCH_WAIT_MS)
    assert (OFF_PATH_FETCH_MIN_BYTES, OFF_PATH_FETCH_WAIT_MS) == (65536, 200)
