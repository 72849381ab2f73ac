"""The schema registry, for real: the embedded Apicurio Registry keeps its ids across restarts
and listens on loopback only; every schema round-trips through it and a standard deserializer;
data of every earlier version is read as the current one; an incompatible change is refused
at provisioning; a stage fails fast without it, and keeps working while it is away."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
from pathlib import Path

import fastavro
import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.utils import generate_many

from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup, free_port
from herald.infra.registry_local import EmbeddedRegistry
from herald.infra.schema_registry import (
    SchemaRefused,
    connect_schema_registry,
    provision_schemas,
    registry_client,
    schema_subjects,
    subject_of,
)
from herald.schemas import headers as h
from herald.schemas.catalog import dead_letter_topic, notification_topic, qualified, topic_catalog
from herald.schemas.codec import decode_expecting, encode, load_schema_json, schema_versions
from tests.catalogs import example, written_catalog
from tests.integration.delivery_support import fast_settings, request_record
from tests.integration.test_cli import herald
from tests.support import HERALD, process_env, read_topic, simulator_network, wait_until
from tests.unit.registry_ids import framed


@pytest.fixture
def private_registry(base_settings, endpoints, tmp_path):
    """A registry of this test's own (on the suite's registry database, so the same ids), to
    stop and start without disturbing other tests."""
    registry = EmbeddedRegistry(tmp_path / "home", base_settings.registry_version, 256,
                                m2=base_settings.maven_repo or base_settings.home / "m2")
    yield registry
    registry.stop()


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of each TCP socket `pid` listens on, from /proc (IPv4 and IPv6)."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            links.append(str(fd.readlink()))
    inodes = {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found


def test_the_embedded_registry_listens_on_loopback_only_and_keeps_ids_across_a_restart(
        private_registry, endpoints):
    state = private_registry.start(endpoints.database_url)
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, as IPv4 and IPv6-mapped
    ports = listening_ports(state.pid)
    assert {port for _address, port in ports} >= {int(state.url.split(":")[2].split("/")[0]),
                                                   state.management_port}
    assert all(address in loopback for address, _port in ports), ports
    subject = f"restart-{free_port()}-value"
    schema = Schema(json.dumps(load_schema_json("notification_status.avsc")), "AVRO")
    before = registry_client(state.url).register_schema(subject, schema)
    assert private_registry.stop()
    again = private_registry.start(endpoints.database_url)
    client = registry_client(again.url)  # the same client: it reconnects to the restarted registry
    client.clear_caches()  # asks the registry itself, not what the client learnt before
    assert client.lookup_schema(subject, schema).schema_id == before
    fetched = json.loads(client.get_schema(before).schema_str)
    assert fetched == load_schema_json("notification_status.avsc")


def test_every_schema_round_trips_through_the_registry_and_a_standard_deserializer(settings, registry):
    """What Herald writes, a consumer with only AvroDeserializer and the registry URL reads."""
    deserialize = AvroDeserializer(registry)
    for subject, name in schema_subjects(topic_catalog(example(), settings.namespace)).items():
        current = fastavro.parse_schema(schema_versions(name)[-1], named_schemas={})
        for sample in generate_many(current, 5):
            record = decode_expecting(_framed(registry, subject, schema_versions(name)[-1], sample), name)
            data = encode(name, record)
            assert decode_expecting(data, name) == record
            assert deserialize(data, SerializationContext(subject[: -len("-value")], MessageField.VALUE)) \
                == record


def test_data_of_every_earlier_version_is_read_as_the_current_one(settings, registry):
    """Each version registered in order under its subject: a record written with any of them,
    carrying the id the registry gave that version, decodes as the current version."""
    for subject, name in schema_subjects(topic_catalog(example(), settings.namespace)).items():
        versions = schema_versions(name)
        assert registry.get_versions(subject) == list(range(1, len(versions) + 1)), subject
        for version in versions:
            for sample in generate_many(fastavro.parse_schema(version, named_schemas={}), 5):
                decode_expecting(_framed(registry, subject, version, sample), name)


def _framed(registry, subject: str, schema: dict, record: dict) -> bytes:
    """`record` as a producer of `schema` frames it, with the id the registry gave that version."""
    registered = registry.lookup_schema(subject, Schema(json.dumps(schema), "AVRO"))
    return framed(registered.schema_id, schema, record)


@pytest.mark.parametrize(("change", "broke"), [
    ("removed", "phone"),  # a field removed that has no default
    ("retyped", "participant_name"),  # a type changed
])
def test_an_incompatible_change_is_refused_at_provisioning_naming_the_subject(
        settings, registry, tmp_path, change, broke):
    schema = load_schema_json_of_example()
    fields = [f for f in schema["fields"] if not (change == "removed" and f["name"] == broke)]
    if change == "retyped":
        fields = [{**f, "type": "long"} if f["name"] == broke else f for f in fields]
    changed = tmp_path / "registration_event.avsc"
    changed.write_text(json.dumps({**schema, "fields": fields}))

    def with_changed_schema(document: dict) -> None:
        document["events"]["registration"]["schema"] = str(changed)
        for notification in document["notifications"].values():  # nothing reads the removed field
            for channel in notification["channels"].values():
                channel["to"] = "email" if channel["to"] == broke else channel["to"]

    _path, catalog = written_catalog(tmp_path, with_changed_schema)
    subject = subject_of(qualified(catalog.topic_of("registration"), settings.namespace))
    try:
        with pytest.raises(SchemaRefused) as refused:
            provision_schemas(registry, topic_catalog(catalog, settings.namespace))
        message = str(refused.value)
        assert f"herald.RegistrationEvent under subject {subject}" in message, message
        assert "FULL_TRANSITIVE" in message and "ncompatible" in message, message
        assert len(registry.get_versions(subject)) == 2, "the refused version was not registered"
    finally:
        open_catalog(example_catalog_path("registrations"), {})  # the example's schema, as other tests expect


def load_schema_json_of_example() -> dict:
    path = example_catalog_path("registrations").parent / "schemas" / "registration_event.avsc"
    return json.loads(path.read_text())


def test_a_stage_fails_fast_when_the_registry_is_away(settings, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    env = {"HERALD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "HERALD_DATABASE_URL": settings.database_url,
           "HERALD_NAMESPACE": settings.namespace}
    configured = herald("deliver", "--channel", "email", env={**env, "HERALD_SCHEMA_REGISTRY_URL": dead},
                        timeout=60)
    assert configured.returncode == 1
    assert f"the schema registry at {dead} does not answer" in " ".join(configured.stderr.split())
    embedded = herald("streams", env={**env, "HERALD_HOME": str(tmp_path)}, timeout=60)
    assert embedded.returncode == 1
    said = " ".join(embedded.stderr.split())
    assert "the schema registry is not running: start it with `herald up`" in said, said


def test_the_registry_stopped_mid_run_loses_and_doubles_nothing(settings, log_dir, private_registry,
                                                                registry):
    """A worker keeps delivering with the ids it knows while the registry is down; a request
    written with an id it has not met (an earlier version's) waits for the registry, is never
    dead-lettered, and is delivered once the registry is back. Counted at the provider."""
    state = private_registry.start(settings.database_url)
    with simulator_network(log_dir, gateway_instances=1) as (network, _simulators):
        configured = dataclasses.replace(fast_settings(settings, network), schema_registry_url=state.url)
        with ProcessGroup(log_dir, process_env(configured, network)) as group:
            group.start("deliver-email", [*HERALD, "deliver", "--channel", "email"])
            wait_until(lambda: "deliver email starting" in group.log_path("deliver-email").read_text(), 60,
                       "the worker to start")
            assert private_registry.stop()
            produce_current(settings, range(100))
            wait_until(lambda: network.accepted("email") >= 100, 90, "the requests of known ids delivered")
            produce_earlier_version(settings, registry, range(100, 120))
            worker_log = group.log_path("deliver-email")
            wait_until(lambda: "schema registry is unreachable" in worker_log.read_text(), 60,
                       "the worker to wait for the registry")
            private_registry.start(settings.database_url)
            wait_until(lambda: network.accepted("email") >= 120, 90, "the waiting requests delivered")
            group.check_alive()
        stats = network.stats("email")
    assert (stats["accepted"], stats["duplicates"]) == (120, 0), stats
    dead = read_topic(settings.kafka_bootstrap, qualified(dead_letter_topic(notification_topic("email")),
                                                           settings.namespace), timeout_s=3)
    assert dead == [], "nothing dead-lettered for a registry outage"


def produce_current(settings, numbers: range) -> None:
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    topic = qualified(notification_topic("email"), settings.namespace)
    for n in numbers:
        request = request_record(n, "email")
        producer.produce(topic, key=request["notification_id"].encode(),
                         value=encode("herald.NotificationRequest", request),
                         headers=[(h.TRACEPARENT, h.new_traceparent().encode())])
    assert producer.flush(30) == 0


def produce_earlier_version(settings, registry, numbers: range) -> None:
    """Requests as a producer of NotificationRequest v2 (before catalogs) wrote them."""
    v2 = load_schema_json("notification_request.avsc", history="v2")
    subject = subject_of(qualified(notification_topic("email"), settings.namespace))
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    for n in numbers:
        current = request_record(n, "email")
        old = {"notification_id": current["notification_id"], "registration_id": current["subject_id"],
               "notification_type": "e_ticket", "channel": "email", "recipient": current["recipient"],
               "participant_name": f"P{n}", "source_event_id": f"e-{n}",
               "source_occurred_at": current["source_occurred_at"], "workspace_id": "default"}
        producer.produce(qualified(notification_topic("email"), settings.namespace),
                         key=current["notification_id"].encode(), value=_framed(registry, subject, v2, old),
                         headers=[(h.TRACEPARENT, h.new_traceparent().encode())])
    assert producer.flush(30) == 0


def test_connecting_learns_the_id_of_every_schema_the_process_writes(settings, registry):
    source = connect_schema_registry(registry, topic_catalog(example(), settings.namespace))
    assert set(source.subjects) == set(schema_subjects(topic_catalog(example(), settings.namespace)).values())
    for name, subject in source.subjects.items():
        record = decode_expecting(_framed(registry, subject, schema_versions(name)[-1], sample(name)), name)
        data = encode(name, record)
        registered = registry.lookup_schema(subject, Schema(json.dumps(schema_versions(name)[-1]), "AVRO"))
        assert struct.unpack(">bI", data[:5]) == (0, registered.schema_id), name
    assert httpx.get(f"{settings.schema_registry_url}/schemas/ids/{registered.schema_id}").status_code == 200


def sample(name: str) -> dict:
    return next(iter(generate_many(fastavro.parse_schema(schema_versions(name)[-1], named_schemas={}), 1)))
