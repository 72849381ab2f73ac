"""Test hygiene shared by unit and integration tests."""

import os

import pytest

from tests.catalogs import example
from tests.shared_services import is_worker, stop_what_workers_started


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller of an xdist run stops the services its workers shared (tests/shared_services.py)."""
    if not is_worker(session.config):
        from herald.infra.settings import Settings

        stop_what_workers_started(Settings.from_environ(os.environ))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def example_event_schemas() -> None:
    """The examples' event schemas known to the codec, as each process's entry point makes its
    catalog's known."""
    example("registrations")
    example("tasks")


@pytest.fixture
def catalog():
    """The registrations example's catalog: the one `make demo` plays."""
    return example("registrations")
