"""The codec on a schema registry, without one running: subjects, compatibility levels, what
an unreachable registry does to a lookup, and what the codec says with no registry at all."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import httpx2
import pytest
from confluent_kafka.schema_registry import ConfigCompatibilityLevel
from confluent_kafka.schema_registry.error import SchemaRegistryError

from herald.infra.processes import ServiceError
from herald.infra.schema_registry import (
    RegistrySchemas,
    SchemaNotRegistered,
    compatibility_level,
    registry_client,
    schema_subjects,
    subject_of,
)
from herald.schemas import codec
from herald.schemas.catalog import topic_catalog
from tests.catalogs import example


class FlakyClient:
    """Answers after `failures` failed attempts (each an exception as the real client raises)."""

    def __init__(self, failures: list[Exception], answer: object) -> None:
        self.failures, self.answer, self.calls = list(failures), answer, 0

    def get_schema(self, _schema_id: int) -> object:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.answer


class Found:
    schema_str = '{"type": "record", "name": "X", "fields": []}'


@pytest.fixture
def no_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("herald.infra.schema_registry.time.sleep", slept.append)
    return slept


def test_an_unreachable_registry_is_waited_for_never_given_up_on(no_sleep):
    failures = [httpx2.ConnectError("refused"), SchemaRegistryError(503, 50301, "starting"),
                httpx2.ReadTimeout("slow"), httpx2.ConnectError("refused")]
    client = FlakyClient(failures, Found())
    source = RegistrySchemas(client, {})  # type: ignore[arg-type]
    assert source.schema_of(42) == {"type": "record", "name": "X", "fields": []}
    assert (client.calls, source.waits) == (5, 4)
    assert no_sleep == [0.5, 1.0, 2.0, 4.0], "backing off, capped at 5 s"


def test_an_id_the_registry_does_not_know_is_none_at_once(no_sleep):
    source = RegistrySchemas(FlakyClient([SchemaRegistryError(404, 40403, "Schema not found")], None), {})  # type: ignore[arg-type]
    assert source.schema_of(7) is None
    assert (source.waits, no_sleep) == (0, [])


def test_a_refused_lookup_is_an_error_not_a_wait(no_sleep):
    source = RegistrySchemas(FlakyClient([SchemaRegistryError(401, 40101, "Unauthorized")], None), {})  # type: ignore[arg-type]
    with pytest.raises(ServiceError, match="refused a lookup: Unauthorized"):
        source.schema_of(7)
    assert no_sleep == []


def test_a_schema_on_none_of_the_process_topics_has_no_subject_to_ask():
    source = RegistrySchemas(FlakyClient([], None), {})  # type: ignore[arg-type]
    with pytest.raises(SchemaNotRegistered, match=r"herald\.NotificationStatus is on none"):
        source.id_of("herald.NotificationStatus", {})


def test_every_topic_of_one_of_herald_s_schemas_is_a_subject_dead_letters_are_not():
    specs = topic_catalog(example(), "ns")
    subjects = schema_subjects(specs)
    assert subjects["ns.notifications.email.retry.2-value"] == "herald.NotificationRequest"
    assert subjects["ns.registrations.events-value"] == "herald.RegistrationEvent"
    assert subjects["ns.streams.missing.deliveries-value"] == "herald.NotificationStatus"
    assert not [s for s in subjects if s.endswith(".dlq-value")], "dead letters keep any bytes as they came"
    typed = {subject_of(spec.name) for spec in specs if not spec.value_schema.startswith("any")}
    assert typed == set(subjects)


def test_compatibility_is_full_transitive_except_where_herald_upgrades_history_itself():
    assert compatibility_level("herald.NotificationStatus") == ConfigCompatibilityLevel.FULL_TRANSITIVE
    assert compatibility_level("herald.RegistrationEvent") == ConfigCompatibilityLevel.FULL_TRANSITIVE
    assert compatibility_level("herald.NotificationRequest") == ConfigCompatibilityLevel.FULL


def test_without_a_registry_the_codec_says_so():
    plugged = list(codec._SOURCE)
    codec.use_schema_source(None)
    try:
        with pytest.raises(codec.UndecodableRecord, match=r"unknown schema id 123456 \(no schema registry"):
            codec.decode(b"\x00\x00\x01\xe2\x40body")
    finally:
        codec.use_schema_source(plugged[0])


def test_an_id_of_a_schema_the_process_does_not_read_is_undecodable(monkeypatch):
    class Other:
        def schema_of(self, _schema_id: int) -> dict:
            return {"type": "record", "name": "Invoice", "namespace": "billing", "fields": []}

    plugged = list(codec._SOURCE)
    codec.use_schema_source(Other())  # type: ignore[arg-type]
    try:
        with pytest.raises(codec.UndecodableRecord, match=r"billing\.Invoice, which this process does not"):
            codec.decode(b"\x00\x00\x01\xe2\x41body")
    finally:
        codec.use_schema_source(plugged[0])


class SilentFirstRegistry:
    """A registry on a real socket that reads the first connection's request and never answers
    it (as Apicurio sometimes does after a 404), then answers each later connection's request."""

    answer = json.dumps({"schema": Found.schema_str}).encode()

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.unanswered: list[socket.socket] = []
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            conn.recv(65536)
            if not self.unanswered:
                self.unanswered.append(conn)
                continue
            self.answered += 1  # before the answer: the client may assert as soon as it has it
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(self.answer)).encode() + b"\r\n\r\n" + self.answer)
            conn.close()

    def close(self) -> None:
        self._listener.close()
        for conn in self.unanswered:
            conn.close()


@pytest.fixture
def silent_first_registry() -> Iterator[SilentFirstRegistry]:
    registry = SilentFirstRegistry()
    yield registry
    registry.close()


def test_a_request_the_registry_never_answers_is_given_up_and_sent_again(silent_first_registry):
    client = registry_client(silent_first_registry.url, timeout_s=0.2)
    assert client.get_schema(1).schema_str == Found.schema_str
    assert (len(silent_first_registry.unanswered), silent_first_registry.answered) == (1, 1)
