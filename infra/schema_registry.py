"""Herald's schemas in a Confluent-compatible schema registry (Confluent Schema Registry,
Karapace, Apicurio's ccompat API), through confluent-kafka's own client.

Subjects follow Confluent's TopicNameStrategy: `<topic as on the broker>-value`. Provisioning
registers each schema's versions in order; a process asks for the ids it writes at start
and for each id it meets once. While the registry is unreachable a lookup waits and retries:
an outage delays a record with an id not yet seen, it never dead-letters one.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaRegistryClient,
    ServerConfig,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError

from herald.infra.processes import ServiceError
from herald.schemas.catalog import TopicSpec
from herald.schemas.codec import (
    assign_schema_id,
    known_schema_names,
    needs_own_upgrade,
    schema_json,
    schema_versions,
    use_schema_source,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K")
_NOT_FOUND = 404
_RETRY_FIRST_S, _RETRY_CAP_S = 0.5, 5.0
_CALLS_AT_ONCE = 8  # round trips in flight together: provisioning, a stage's start, cleanup
# Each round trip's bound (confluent-kafka's client then retries on a new connection). Apicurio
# 3.3 sometimes never answers the request that follows a 404 for a path it has no route for
# (confluent-kafka's AvroDeserializer asks such a path, `associations/...`, per topic): seen
# in about 1 of 300 such pairs. Without a bound, the caller would wait for ever.
REQUEST_TIMEOUT_S = 5.0


class SchemaRefused(ServiceError):
    """The registry refused a schema version: the message names the subject and what broke."""


class SchemaNotRegistered(ServiceError):
    """A schema the process writes is not registered under its subject: provision first."""


def subject_of(topic: str) -> str:
    """Confluent's TopicNameStrategy for record values."""
    return f"{topic}-value"


def schema_subjects(specs: tuple[TopicSpec, ...]) -> dict[str, str]:
    """{subject: schema name} for every topic whose values are one of the codec's schemas."""
    known = set(known_schema_names())
    return {subject_of(spec.name): spec.value_schema for spec in specs if spec.value_schema in known}


def compatibility_level(schema_name: str) -> ConfigCompatibilityLevel:
    """FULL_TRANSITIVE: a reader of the newest version reads every record ever written (the
    compacted topics keep them forever), and a reader pinned to any earlier version (a Flink
    table, a ksqlDB stream, a Connect sink declared before the change) reads every new one. So
    a field is added or removed only with a default, and a type changes only as Avro promotes.
    A schema whose history Herald upgrades itself (an enum that became a string, which Avro's
    resolution refuses) is checked against its latest version only: FULL."""
    if needs_own_upgrade(schema_name):
        return ConfigCompatibilityLevel.FULL
    return ConfigCompatibilityLevel.FULL_TRANSITIVE


_CLIENTS: dict[tuple[str, float], SchemaRegistryClient] = {}
_CLIENTS_LOCK = threading.Lock()


def registry_client(url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> SchemaRegistryClient:
    """confluent-kafka's client for `url`, one per process (it caches what it learnt, and its
    connections outlive a call); its own in-memory mock for a `mock://` URL, in unit tests.
    A round trip unanswered for `timeout_s` is retried, and fails after the client's retries."""
    key = (url.rstrip("/"), timeout_s)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = SchemaRegistryClient.new_client({"url": key[0], "timeout": timeout_s})
        return _CLIENTS[key]


def close_registry_clients() -> None:
    """Close the clients' HTTP connections (at exit: an open socket left to the interpreter's
    teardown is reported as a ResourceWarning)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            client.close()
        _CLIENTS.clear()


atexit.register(close_registry_clients)


def _at_once(call: Callable[[K], T], items: Iterable[K]) -> list[T]:
    """`call` on every item, the registry round trips in flight together; results in order."""
    with ThreadPoolExecutor(max_workers=_CALLS_AT_ONCE) as pool:
        return list(pool.map(call, items))


def _avro(schema: Mapping[str, Any]) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


def _reason(exc: SchemaRegistryError) -> str:
    """The registry's message without a Java exception's class name in front."""
    message = str(exc.error_message)
    head, _sep, rest = message.partition(": ")
    return rest if rest and "Exception" in head else message


@dataclass
class RegistrySchemas:
    """The codec's schema source: a registry client, and the subject each schema name is
    looked up under. Counts how often it waited for an unreachable registry."""

    client: SchemaRegistryClient
    subjects: dict[str, str]  # schema name -> a subject it is registered under
    waits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def id_of(self, schema_name: str, schema: Mapping[str, Any]) -> int:
        subject = self.subjects.get(schema_name)
        if subject is None:
            raise SchemaNotRegistered(f"{schema_name} is on none of this process's topics, so it has no "
                                      "subject to look its id up under")
        found = self._answer(lambda: self.client.lookup_schema(subject, _avro(schema)))
        if found is None or found.schema_id is None:
            raise SchemaNotRegistered(f"{schema_name} is not registered under subject {subject}: "
                                      "provision it (`herald up`)")
        return int(found.schema_id)

    def schema_of(self, schema_id: int) -> dict[str, Any] | None:
        found = self._answer(lambda: self.client.get_schema(schema_id))
        return None if found is None else dict(json.loads(found.schema_str or "null") or {})

    def _answer(self, call: Callable[[], T]) -> T | None:
        """The registry's answer; None for "not found"; waits and retries while it is unreachable."""
        delay = _RETRY_FIRST_S
        while True:
            try:
                return call()
            except SchemaRegistryError as exc:
                if exc.http_status_code == _NOT_FOUND:
                    return None
                if exc.http_status_code < 500:
                    raise ServiceError(f"the schema registry refused a lookup: {_reason(exc)}") from None
                problem = f"answers {exc.http_status_code}"
            except Exception as exc:  # the client's transport raises its own types
                problem = f"is unreachable ({type(exc).__name__})"
            with self._lock:
                self.waits += 1
            log.warning("the schema registry %s; retrying in %.1f s (records with a schema id not yet "
                        "seen wait; none is dead-lettered for it)", problem, delay)
            time.sleep(delay)
            delay = min(_RETRY_CAP_S, delay * 2)


def connect_schema_registry(client: SchemaRegistryClient, specs: tuple[TopicSpec, ...]) -> RegistrySchemas:
    """Plug the registry into the codec for this process and learn the id of every schema its
    topics carry now, so those keep working while the registry is away."""
    subjects: dict[str, str] = {}
    for subject, name in schema_subjects(specs).items():
        subjects.setdefault(name, subject)
    source = RegistrySchemas(client, subjects)
    use_schema_source(source)
    ids = _at_once(lambda name: source.id_of(name, schema_json(name)), subjects)  # every start waits
    for name, schema_id in zip(subjects, ids, strict=True):
        assign_schema_id(name, schema_id)
    return source


def register_and_connect(url: str, specs: tuple[TopicSpec, ...]) -> RegistrySchemas:
    """Provision the topics' schemas, then put this process's codec on them (what `herald up`
    does for its catalog, and a bench or test for a namespace of its own)."""
    client = registry_client(url)
    provision_schemas(client, specs)
    return connect_schema_registry(client, specs)


def delete_subjects(client: SchemaRegistryClient, specs: tuple[TopicSpec, ...]) -> int:
    """Delete the topics' subjects for good (a bench's or a test's namespace, once its topics
    are gone); how many there were."""
    def delete(subject: str) -> bool:
        client.delete_subject(subject)
        client.delete_subject(subject, permanent=True)
        return True

    return sum(_at_once(lambda subject: _unless_missing(partial(delete, subject), False),
                        schema_subjects(specs)))


@dataclass(frozen=True)
class SchemaReport:
    registered: tuple[str, ...]  # "<subject> v<n>", newly registered
    subjects: int


def provision_schemas(client: SchemaRegistryClient, specs: tuple[TopicSpec, ...]) -> SchemaReport:
    """Register every schema version the topics carry under its subject, in order, and set the
    subjects' compatibility. A version the registry refuses raises SchemaRefused."""
    plan = schema_subjects(specs)
    done = _at_once(lambda item: _provision_subject(client, *item), plan.items())
    return SchemaReport(tuple(entry for entries in done for entry in entries), len(plan))


def _provision_subject(client: SchemaRegistryClient, subject: str, name: str) -> list[str]:
    versions = schema_versions(name)
    level = compatibility_level(name)
    try:
        if not _registered_versions(client, subject):
            return _adopt(client, subject, versions, level)
        added = [f"{subject} v{client.register_schema_full_response(subject, _avro(v)).version}"
                 for v in versions if _lookup(client, subject, v) is None]
        client.set_config(subject, ServerConfig(compatibility=level))
        return added
    except SchemaRegistryError as exc:
        raise SchemaRefused(f"the schema registry refuses {name} under subject {subject} "
                            f"({level.value}): {_reason(exc)}") from None


def _adopt(client: SchemaRegistryClient, subject: str, versions: tuple[dict[str, Any], ...],
           level: ConfigCompatibilityLevel) -> list[str]:
    """A new subject: its versions were written before this registry knew them (as data that
    exists), so they go in unchecked, in order; the subject's level holds from then on."""
    client.register_schema(subject, _avro(versions[0]))
    client.set_config(subject, ServerConfig(compatibility=ConfigCompatibilityLevel.NONE))
    for version in versions[1:]:
        client.register_schema(subject, _avro(version))
    client.set_config(subject, ServerConfig(compatibility=level))
    return [f"{subject} v{n}" for n in range(1, len(versions) + 1)]


def _registered_versions(client: SchemaRegistryClient, subject: str) -> list[int]:
    return _unless_missing(lambda: list(client.get_versions(subject)), [])


def _lookup(client: SchemaRegistryClient, subject: str, schema: Mapping[str, Any]) -> int | None:
    return _unless_missing(lambda: client.lookup_schema(subject, _avro(schema)).schema_id, None)


def _unless_missing(call: Callable[[], T], missing: T) -> T:
    """The registry's answer, or `missing` when it says 404 (no such subject, version or id)."""
    try:
        return call()
    except SchemaRegistryError as exc:
        if exc.http_status_code == _NOT_FOUND:
            return missing
        raise
