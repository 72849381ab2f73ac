"""Test hygiene shared by unit and integration tests."""

import pytest

from tests.catalogs import example


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
