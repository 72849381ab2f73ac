"""Every way a catalog can be wrong is refused, naming the file, the entry and the field."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from herald.infra.catalogs import example_catalog_path
from herald.schemas.catalog_file import CatalogError, load_catalog
from herald.schemas.catalog_model import duration_s

SCHEMA = {
    "type": "record", "name": "ParcelEvent", "namespace": "parcels",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "parcel_id", "type": "string"},
        {"name": "state", "type": {"type": "enum", "name": "State", "symbols": ["shipped", "delivered"]}},
        {"name": "phone", "type": "string"},
        {"name": "backup_phone", "type": ["null", "string"], "default": None},
        {"name": "weight", "type": "double"},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
CATALOG = {
    "name": "parcels",
    "events": {"parcel": {"schema": "parcel.avsc", "key": "parcel_id", "types": ["parcel.shipped"],
                          "type_field": "state"}},
    "notifications": {"shipped": {"trigger": ["parcel.shipped"], "channels": {"sms": {"to": "phone"}},
                                  "params": {"weight": "weight"}, "sla": "2m"}},
    "channels": {"sms": {"kind": "whatsapp-gateway", "connection": {"instances": "http://gw:1"}}},
}


def write(tmp_path: Path, catalog: dict, schema: object = SCHEMA, text: str | None = None) -> Path:
    (tmp_path / "parcel.avsc").write_text(json.dumps(schema))
    path = tmp_path / "catalog.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(catalog, sort_keys=False))
    return path


def problems(tmp_path: Path, change=None, *, schema: object = SCHEMA, text: str | None = None,
             environ: dict | None = None) -> list[tuple[str, str, str]]:
    catalog = copy.deepcopy(CATALOG)
    if change is not None:
        change(catalog)
    path = write(tmp_path, catalog, schema, text)
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, environ or {})
    assert all(p.file == str(path) for p in raised.value.problems)
    return [(p.entry, p.field, p.message) for p in raised.value.problems]


def where(found: list[tuple[str, str, str]]) -> set[tuple[str, str]]:
    return {(entry, field) for entry, field, _message in found}


def test_the_valid_catalog_loads_with_its_schema(tmp_path):
    catalog = load_catalog(write(tmp_path, CATALOG), {})
    assert catalog.topic_of("parcel") == "parcel.events"
    assert catalog.event_schemas["parcel"]["name"] == "ParcelEvent"
    assert catalog.notifications["shipped"].sla == 120.0
    assert [name for name, _spec in catalog.notifications_on("parcel.shipped")] == ["shipped"]


@pytest.mark.parametrize("example", ["registrations", "tasks", "payments"])
def test_the_example_catalogs_check(example):
    catalog = load_catalog(example_catalog_path(example), {"PAYMENT_WEBHOOK_SECRETS": GOOD_SECRET})
    assert catalog.name == example


def test_a_name_declared_twice_is_refused(tmp_path):
    text = yaml.safe_dump(CATALOG) + "\n"
    text = text.replace("notifications:\n", "notifications:\n  shipped:\n    trigger: [parcel.shipped]\n", 1)
    found = problems(tmp_path, text=text)
    assert found[0][:2] == ("(catalog)", "shipped") and "declared twice" in found[0][2]


def test_a_bare_on_is_refused_because_yaml_reads_it_as_true(tmp_path):
    text = yaml.safe_dump(CATALOG).replace("trigger:", "on:")
    assert "quote it" in problems(tmp_path, text=text)[0][2]


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed", "is not valid YAML at line"),
    ("- a list", "must be a mapping"),
])
def test_a_file_that_is_no_catalog_is_refused(tmp_path, text, message):
    assert message in problems(tmp_path, text=text)[0][2]


def test_fields_herald_sets_are_refused_in_the_file(tmp_path):
    assert ("(catalog)", "source") in where(problems(tmp_path, lambda c: c.update(source="x")))


def test_an_unknown_setting_is_named(tmp_path):
    found = problems(tmp_path, lambda c: c["notifications"]["shipped"].update(slaa="1m"))
    assert found == [("notifications.shipped", "slaa", "is not a setting of this entry")]


@pytest.mark.parametrize("schema, message", [
    ("not json {", "is not an Avro schema"),
    ({"type": "record", "name": "X", "fields": [{"name": "a", "type": "nosuchtype"}]},
     "is not an Avro schema"),
    ({"type": "enum", "name": "E", "symbols": ["a"]}, "must be an Avro record"),
])
def test_a_schema_that_does_not_parse_is_named(tmp_path, schema, message):
    (tmp_path / "parcel.avsc").write_text(schema if isinstance(schema, str) else json.dumps(schema))
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG))
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, {})
    (problem,) = raised.value.problems
    assert (problem.entry, problem.field) == ("events.parcel", "schema") and message in problem.message


def test_a_missing_schema_file_is_named(tmp_path):
    found = problems(tmp_path, lambda c: c["events"]["parcel"].update(schema="gone.avsc"))
    assert found == [("events.parcel", "schema", "cannot read gone.avsc: No such file or directory")]


@pytest.mark.parametrize("setting, value, message", [
    ("key", "parcel", "'parcel' is no field of the event's schema"),
    ("key", "weight", "'weight' is double; it must be string"),
    ("key", "backup_phone", "may be null"),
    ("workspace_field", "tags", "'tags' is map; it must be string"),
    ("type_field", "weight", "it must be string or enum"),
])
def test_event_kind_fields_must_exist_with_a_fitting_type(tmp_path, setting, value, message):
    (found,) = problems(tmp_path, lambda c: c["events"]["parcel"].update({setting: value}))
    assert found[:2] == ("events.parcel", setting) and message in found[2]


def test_types_must_be_of_their_kind_and_match_the_type_field(tmp_path):
    def change(c):
        c["events"]["parcel"]["types"] = ["parcel.shipped", "parcel.lost", "box.shipped"]
        c["notifications"]["shipped"]["trigger"] = ["parcel.shipped"]
    found = where(problems(tmp_path, change))
    assert found == {("events.parcel", "types.1"), ("events.parcel", "types.2")}


def test_channel_names_of_herald_s_own_topics_are_reserved(tmp_path):
    def change(c):
        c["channels"]["status"] = c["channels"].pop("sms")
        c["notifications"]["shipped"]["channels"] = {"status": {"to": "phone"}}
    assert ("channels.status", "") in where(problems(tmp_path, change))


def test_the_gateway_session_kind_is_reserved(tmp_path):
    def change(c):
        c["events"]["session"] = c["events"].pop("parcel")
    assert ("events.session", "") in where(problems(tmp_path, change))


@pytest.mark.parametrize("section, bad_name", [("channels", "sms.eu"), ("notifications", "Shipped")])
def test_names_must_fit_topic_names(tmp_path, section, bad_name):
    def change(c):
        c[section][bad_name] = c[section].pop(next(iter(c[section])))
    assert (f"{section}.{bad_name}", "") in where(problems(tmp_path, change))


def test_two_kinds_on_one_topic_are_refused(tmp_path):
    def change(c):
        c["events"]["box"] = {**c["events"]["parcel"], "types": ["box.shipped"], "topic": "parcel.events"}
        del c["events"]["box"]["type_field"]
    found = where(problems(tmp_path, change))
    assert ("events.box", "topic") in found and ("events.box", "schema") in found


@pytest.mark.parametrize("trigger, field", [
    (["parcel.lost"], "trigger.0"),
    (["parcel.shipped", "box.shipped"], "trigger.1"),
])
def test_triggers_must_be_declared_types(tmp_path, trigger, field):
    found = where(problems(tmp_path, lambda c: c["notifications"]["shipped"].update(trigger=trigger)))
    assert ("notifications.shipped", field) in found


def test_a_notification_names_declared_channels_and_recipient_fields(tmp_path):
    def change(c):
        c["notifications"]["shipped"]["channels"] = {"sms": {"to": "backup_phone"}, "fax": {"to": "nope"}}
    found = problems(tmp_path, change)
    entry = "notifications.shipped"
    assert where(found) == {(entry, "channels.sms.to"), (entry, "channels.fax"), (entry, "channels.fax.to")}


def test_params_and_guards_name_fields_of_a_fitting_type(tmp_path):
    def change(c):
        c["notifications"]["shipped"]["params"] = {"all": "tags", "who": "nobody"}
        c["notifications"]["shipped"]["when"] = {"state": "lost", "weight": 2}
    found = where(problems(tmp_path, change))
    assert found == {("notifications.shipped", "params.all"), ("notifications.shipped", "params.who"),
                     ("notifications.shipped", "when.state")}


@pytest.mark.parametrize("notification, field, message", [
    ({"sla": "soon"}, "sla", "must be a duration"),
    ({"sla": "0s"}, "sla", "must be longer than zero"),
    ({"sla": None, "resends": 2}, "", "resends needs an sla"),
    ({"resends": 11}, "resends", "less than or equal to 10"),
])
def test_sla_and_resends_are_bounded(tmp_path, notification, field, message):
    (found,) = problems(tmp_path, lambda c: c["notifications"]["shipped"].update(notification))
    assert found[:2] == ("notifications.shipped", field) and message in found[2]


@pytest.mark.parametrize("retry, field, message", [
    ({"tiers": ["30s", "5s"]}, "retry", "tiers must be distinct, in increasing order"),
    ({"tiers": ["5s", "5s"]}, "retry", "tiers must be distinct, in increasing order"),
    ({"tiers": ["1s", "2s", "3s", "4s"]}, "retry.tiers", "at most 3"),
    ({"jitter": "half"}, "retry.jitter", "'full', 'equal' or 'decorrelated'"),
    ({"base": "10s", "cap": "5s"}, "retry", "cap must be at least base"),
    ({"max_attempts": 0}, "retry.max_attempts", "greater than or equal to 1"),
])
def test_retry_policies_are_checked(tmp_path, retry, field, message):
    (found,) = problems(tmp_path, lambda c: c["channels"]["sms"].update(retry=retry))
    assert found[:2] == ("channels.sms", field) and message in found[2]


@pytest.mark.parametrize("per_endpoint, field, message", [
    ({"in_flight": 0}, "per_endpoint.in_flight", "greater than or equal to 1"),
    ({"rate": 0}, "per_endpoint.rate", "greater than 0"),
    ({"wait": "0s"}, "per_endpoint.wait", "longer than zero"),
    ({"burst": 5}, "per_endpoint.burst", "is not a setting"),
])
def test_per_endpoint_limits_are_checked(tmp_path, per_endpoint, field, message):
    (found,) = problems(tmp_path, lambda c: c["channels"]["sms"].update(per_endpoint=per_endpoint))
    assert found[:2] == ("channels.sms", field) and message in found[2]


@pytest.mark.parametrize("channel, field", [
    ({"kind": "email"}, "connection.url"),
    ({"kind": "whatsapp-gateway", "connection": {}}, "connection.instances"),
    ({"kind": "whatsapp-gateway", "connection": {"instances": ["http://a", "gw:1"]}}, "connection.instances"),
    ({"kind": "pigeon", "connection": {}}, "kind"),
    ({"kind": "webhook", "connection": {}}, "connection.secrets"),
    ({"kind": "webhook", "connection": {"secrets": "${HOOK_SECRETS}"}}, "connection.secrets"),
    ({"kind": "webhook", "connection": {"secrets": "${GOOD_SECRET}", "url": "hooks.example"}},
     "connection.url"),
])
def test_a_channel_has_the_connection_its_kind_needs(tmp_path, channel, field):
    environ = {"HOOK_SECRETS": f"{GOOD_SECRET},not-a-secret", "GOOD_SECRET": GOOD_SECRET}
    found = where(problems(tmp_path, lambda c: c["channels"].update(sms=channel), environ=environ))
    assert found == {("channels.sms", field)}


GOOD_SECRET = "whsec_" + "c2VjcmV0LW9mLWF0LWxlYXN0LTE2LWJ5dGVz"  # base64 of 27 bytes
SMTP = {"kind": "email-smtp",
        "connection": {"host": "smtp.example", "port": 587, "from": "n@parcels.example"}}


@pytest.mark.parametrize("connection, field", [
    ({"host": ""}, "connection.host"),
    ({"from": "nobody"}, "connection.from"),
    ({"port": "smtp"}, "connection.port"),
    ({"security": "ssl"}, "connection.security"),
    ({"username": "herald"}, "connection"),
    ({"connections": "many"}, "connection.connections"),
    ({"connections": 0}, "connection.connections"),
])
def test_an_smtp_channel_is_checked(tmp_path, connection, field):
    def change(c):
        c["channels"]["sms"] = copy.deepcopy(SMTP)
        c["channels"]["sms"]["connection"].update(connection)
        (tmp_path / "templates").mkdir(exist_ok=True)
        (tmp_path / "templates" / "shipped.j2").write_text("{% block text %}ok{% endblock %}")
    assert where(problems(tmp_path, change)) == {("channels.sms", field)}


def test_a_rendering_channel_needs_each_notifications_template_and_it_must_parse(tmp_path):
    def change(c):
        c["channels"]["sms"] = copy.deepcopy(SMTP)
    (found,) = problems(tmp_path, change)
    assert found[:2] == ("notifications.shipped", "template")
    assert "shipped.j2 is not in templates/" in found[2]
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "shipped.id.j2").write_text("{% block text %}{{ weight }{% endblock %}")
    (found,) = problems(tmp_path, change)
    assert found[:2] == ("notifications.shipped", "template") and found[2].startswith("shipped.id.j2 line 1")
    (tmp_path / "templates" / "shipped.id.j2").write_text("{% block text %}{{ weight }}{% endblock %}")
    catalog = load_catalog(write(tmp_path, {**CATALOG, "channels": {"sms": SMTP}}), {})
    assert catalog.template_dir == str(tmp_path / "templates")


def test_a_secret_written_in_the_file_is_refused_without_being_shown(tmp_path):
    def change(c):
        c["channels"]["sms"]["connection"]["api_key"] = "hunter2-secret-value"
    (found,) = problems(tmp_path, change)
    assert found[:2] == ("channels.sms", "connection.api_key") and "${VARIABLE}" in found[2]
    assert "hunter2" not in str(found)


def test_secrets_and_settings_come_from_the_environment(tmp_path):
    catalog = copy.deepcopy(CATALOG)
    catalog["channels"]["sms"]["connection"] = {"instances": "${GW_URLS:-http://fallback:1}",
                                                "api_key": "${GW_KEY}"}
    path = write(tmp_path, catalog)
    loaded = load_catalog(path, {"GW_KEY": "k", "GW_URLS": "http://a:1,http://b:2"})
    assert loaded.channels["sms"].connection == {"instances": "http://a:1,http://b:2", "api_key": "k"}
    assert load_catalog(path, {"GW_KEY": "k"}).channels["sms"].connection["instances"] == "http://fallback:1"
    with pytest.raises(CatalogError) as raised:
        load_catalog(path, {})
    assert "needs the environment variable GW_KEY" in str(raised.value)


@pytest.mark.parametrize("text, seconds", [("300ms", 0.3), ("30s", 30), ("5m", 300), ("2h", 7200),
                                           ("1d", 86400), (90, 90), ("1.5m", 90)])
def test_durations_read_as_seconds(text, seconds):
    assert duration_s(text) == pytest.approx(seconds)
