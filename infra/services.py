"""Where Kafka, PostgreSQL and the schema registry are: configured ones (HERALD_*) or the
embedded ones."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from confluent_kafka.admin import AdminClient

from herald.infra.kafka_local import EmbeddedKafka
from herald.infra.postgres_local import EmbeddedPostgres
from herald.infra.processes import ServiceError
from herald.infra.registry_local import EmbeddedRegistry, answers
from herald.infra.settings import Settings


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    database_url: str
    schema_registry_url: str = ""


@dataclass(frozen=True)
class Started:
    """Which embedded services this call started, so the caller stops only those."""
    kafka: bool
    postgres: bool
    registry: bool = False


def embedded_kafka(settings: Settings) -> EmbeddedKafka:
    return EmbeddedKafka(settings.home, settings.kafka_version, settings.kafka_heap_mb,
                         m2=settings.maven_repo, nodes=settings.kafka_brokers)


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.home)


def embedded_registry(settings: Settings) -> EmbeddedRegistry:
    return EmbeddedRegistry(settings.home, settings.registry_version, settings.registry_heap_mb,
                            m2=settings.maven_repo)


def start_services(settings: Settings) -> tuple[Endpoints, Started]:
    """Start the embedded services that no HERALD_* variable replaces; reuse running ones."""
    kafka_started = pg_started = False
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        kafka = embedded_kafka(settings)
        kafka_started = kafka.state() is None
        bootstrap = kafka.start().bootstrap
    database_url = settings.database_url
    if database_url is None:
        postgres = embedded_postgres(settings)
        pg_started = postgres.state() is None
        database_url = postgres.start().url
    registry_url, registry_started = _start_registry(settings, database_url)
    return (Endpoints(bootstrap, database_url, registry_url),
            Started(kafka_started, pg_started, registry_started))


def _start_registry(settings: Settings, database_url: str) -> tuple[str, bool]:
    """The registry's URL, and whether this call started the embedded one (on Herald's PostgreSQL)."""
    if settings.schema_registry_url is not None:
        return settings.schema_registry_url.rstrip("/"), False
    registry = embedded_registry(settings)
    started = registry.state() is None
    return registry.start(database_url).url, started


def stop_services(settings: Settings, only: Started | None = None) -> list[str]:
    """Stop embedded services (all, or only those in `only`); names what was stopped."""
    stopped = []
    # The registry first: it stores its schemas in PostgreSQL.
    if (only is None or only.registry) and embedded_registry(settings).stop():
        stopped.append("schema registry")
    if (only is None or only.kafka) and embedded_kafka(settings).stop():
        stopped.append("kafka")
    if (only is None or only.postgres) and embedded_postgres(settings).stop():
        stopped.append("postgres")
    return stopped


def purge_services(settings: Settings) -> None:
    """Stop the embedded services and delete their data: the next `herald up` starts empty."""
    pg_state = embedded_postgres(settings).state()
    embedded_registry(settings).purge(pg_state.url if pg_state and settings.database_url is None else None)
    embedded_kafka(settings).purge()
    embedded_postgres(settings).purge()


def resolve_endpoints(settings: Settings, need_database: bool = True) -> Endpoints:
    """For long-running processes: never start anything, fail fast naming what is missing."""
    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        state = embedded_kafka(settings).state()
        if state is None:
            raise ServiceError("Kafka is not running: start it with `herald up`, "
                               "or set HERALD_KAFKA_BOOTSTRAP to an existing broker")
        bootstrap = state.bootstrap
    if settings.database_url is None and not need_database:
        return Endpoints(bootstrap, "")
    return Endpoints(bootstrap, resolve_database_url(settings))


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return settings.database_url
    pg_state = embedded_postgres(settings).state()
    if pg_state is None:
        raise ServiceError("PostgreSQL is not running: start it with `herald up`, "
                           "or set HERALD_DATABASE_URL to an existing database")
    return pg_state.url


def resolve_registry_url(settings: Settings) -> str:
    """The schema registry's URL; fails fast, naming it and how to start it, when none answers."""
    if settings.schema_registry_url is not None:
        url = settings.schema_registry_url.rstrip("/")
        if not answers(url):
            raise ServiceError(f"the schema registry at {url} does not answer; start it or fix "
                               "HERALD_SCHEMA_REGISTRY_URL")
        return url
    state = embedded_registry(settings).state()
    if state is None or not answers(state.url):
        raise ServiceError("the schema registry is not running: start it with `herald up`, "
                           "or set HERALD_SCHEMA_REGISTRY_URL to an existing one")
    return state.url


def check_kafka(bootstrap: str, timeout_s: float = 5.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception as exc:
        raise ServiceError(f"Kafka at {bootstrap} does not answer ({exc}); start it with "
                           "`herald up` or fix HERALD_KAFKA_BOOTSTRAP") from None


def check_database(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        raise ServiceError(f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} "
                           f"does not answer ({exc.orig}); start it with `herald up` or fix "
                           "HERALD_DATABASE_URL") from None
    finally:
        engine.dispose()
