"""Fixtures the unit tests share."""

import logging

import pytest

MOCK_REGISTRY = "mock://herald-unit-tests"


@pytest.fixture
def logging_kept():
    """The CLI configures the process's logging at start; this test process keeps its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture(autouse=True, scope="session")
def schema_registry():
    """Unit tests' schema registry: confluent-kafka's own mock, holding Herald's schemas and the
    examples' as provisioning registers them (integration tests use a real registry)."""
    from herald.infra.schema_registry import connect_schema_registry, provision_schemas, registry_client
    from herald.schemas.catalog import topic_catalog
    from herald.schemas.codec import use_schema_source
    from tests.catalogs import example

    specs = (*topic_catalog(example("registrations")), *topic_catalog(example("tasks")))
    client = registry_client(MOCK_REGISTRY)
    provision_schemas(client, specs)
    yield connect_schema_registry(client, specs)
    use_schema_source(None)


@pytest.fixture(autouse=True)
def unit_schema_source(schema_registry):
    """The mock registry plugged in for each unit test: a worker that ran an integration test
    first (`make test` runs two) holds the real registry of a namespace that test deleted."""
    from herald.schemas.codec import plugged_schema_source, use_schema_source

    if plugged_schema_source() is not schema_registry:
        use_schema_source(schema_registry)
