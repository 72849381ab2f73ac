"""Where Kafka and PostgreSQL are: configured ones (HERALD_*) or the embedded ones."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from confluent_kafka.admin import AdminClient

from herald.infra.kafka_local import EmbeddedKafka
from herald.infra.postgres_local import EmbeddedPostgres
from herald.infra.processes import ServiceError
from herald.infra.settings import Settings


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    database_url: str


@dataclass(frozen=True)
class Started:
    """Which embedded services this call started, so the caller stops only those."""
    kafka: bool
    postgres: bool


def embedded_kafka(settings: Settings) -> EmbeddedKafka:
    return EmbeddedKafka(settings.home, settings.kafka_version, settings.kafka_heap_mb,
                         m2=settings.maven_repo, nodes=settings.kafka_brokers)


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.home)


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
    return Endpoints(bootstrap, database_url), Started(kafka_started, pg_started)


def stop_services(settings: Settings, only: Started | None = None) -> list[str]:
    """Stop embedded services (all, or only those in `only`); names what was stopped."""
    stopped = []
    if (only is None or only.kafka) and embedded_kafka(settings).stop():
        stopped.append("kafka")
    if (only is None or only.postgres) and embedded_postgres(settings).stop():
        stopped.append("postgres")
    return stopped


def purge_services(settings: Settings) -> None:
    """Stop the embedded services and delete their data: the next `herald up` starts empty."""
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
