"""Real Kafka, PostgreSQL and schema registry for integration tests, and a fresh namespace
per test.

Services, in order: HERALD_KAFKA_BOOTSTRAP / HERALD_DATABASE_URL / HERALD_SCHEMA_REGISTRY_URL
when set; containers when a Docker engine answers; else the embedded default (started here,
stopped after, unless it was already running).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka.schema_registry import SchemaRegistryClient

from herald.examples.registrations.app import create_tables
from herald.infra.kafka_local import EmbeddedKafka
from herald.infra.provisioning import delete_namespace_topics, provision_topics
from herald.infra.schema_registry import (
    connect_schema_registry,
    delete_subjects,
    provision_schemas,
    registry_client,
)
from herald.infra.services import Endpoints, start_services, stop_services
from herald.infra.settings import Settings
from herald.schemas.catalog import topic_catalog
from herald.schemas.migrations import scratch_database
from tests.catalogs import example
from tests.containers import docker_engine_answers, kafka_container, postgres_container
from tests.shared_services import is_worker, start_for_worker


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_environ(os.environ)  # the test run's entry point


@pytest.fixture(scope="session")
def endpoints(base_settings: Settings, pytestconfig: pytest.Config) -> Iterator[Endpoints]:
    with ExitStack() as stack:
        kafka, database = base_settings.kafka_bootstrap, base_settings.database_url
        if (kafka is None or database is None) and docker_engine_answers():
            kafka = kafka or stack.enter_context(kafka_container(base_settings.kafka_version))
            database = database or stack.enter_context(postgres_container())
        settings = dataclasses.replace(base_settings, kafka_bootstrap=kafka, database_url=database)
        if is_worker(pytestconfig):  # shared with the other workers; the controller stops them
            yield start_for_worker(settings)
            return
        found, started = start_services(settings)  # embedded for whatever is still unset
        stack.callback(stop_services, settings, started)
        yield found


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def registry(endpoints: Endpoints) -> SchemaRegistryClient:
    """The suite's schema registry client; the codec asks it, as a process's would."""
    return registry_client(endpoints.schema_registry_url)


@contextmanager
def catalog_topics(endpoints: Endpoints, namespace: str, registry: SchemaRegistryClient) -> Iterator[None]:
    """The whole catalog (the registrations example's) under `namespace`, its schemas
    registered, this process's codec on them (whatever an earlier test left it on); topics
    removed afterwards with what it spawned."""
    specs = topic_catalog(example(), namespace)
    provision_topics(endpoints.kafka_bootstrap, specs)
    provision_schemas(registry, specs)
    connect_schema_registry(registry, specs)
    yield
    delete_subjects(registry, specs)
    delete_namespace_topics(endpoints.kafka_bootstrap, f"{namespace}.")


@pytest.fixture
def topics(endpoints: Endpoints, namespace: str, registry) -> Iterator[None]:
    """The catalog's topics and schemas under this test's namespace (`catalog_topics`)."""
    with catalog_topics(endpoints, namespace, registry):
        yield


@pytest.fixture
def database_url(endpoints: Endpoints, namespace: str) -> Iterator[str]:
    """A database of this test's own, migrated to the newest schema, with the registrations
    example app's own table (the suite plays that app); dropped afterwards."""
    with scratch_database(endpoints.database_url, namespace) as url:
        engine = sa.create_engine(url)
        create_tables(engine)
        engine.dispose()
        yield url


@pytest.fixture
def settings(base_settings: Settings, endpoints: Endpoints, namespace: str, database_url: str,
             topics: None) -> Settings:
    return dataclasses.replace(base_settings, kafka_bootstrap=endpoints.kafka_bootstrap,
                               database_url=database_url, namespace=namespace,
                               schema_registry_url=endpoints.schema_registry_url)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url, pool_size=10)
    yield engine
    engine.dispose()


@pytest.fixture
def log_dir(base_settings: Settings, namespace: str) -> Path:
    return base_settings.home / "test-logs" / namespace


@pytest.fixture
def private_broker(base_settings: Settings, tmp_path: Path):
    """A broker of this test's own, so stopping it disturbs no other test."""
    broker = EmbeddedKafka(tmp_path, base_settings.kafka_version, 384, m2=base_settings.home / "m2")
    yield broker
    broker.stop()
