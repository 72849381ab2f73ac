"""Which catalog a process runs: HERALD_CATALOG, or the default example's when unset."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from herald.schemas.catalog_file import load_catalog
from herald.schemas.catalog_model import Catalog
from herald.schemas.event_schemas import register_event_schemas

# The examples ship as package data; this file of theirs names the one `make demo` plays.
_DEFAULT_EXAMPLE_FILE = "DEFAULT"


def default_example() -> str:
    return (resources.files("herald.examples") / _DEFAULT_EXAMPLE_FILE).read_text(encoding="utf-8").strip()


def example_catalog_path(example: str) -> Path:
    """The catalog file of one of the examples shipped with Herald."""
    path = Path(str(resources.files(f"herald.examples.{example}") / "catalog.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no example catalog {example!r} at {path}")
    return path


def catalog_path(configured: Path | None) -> Path:
    return configured if configured is not None else example_catalog_path(default_example())


def read_catalog(configured: Path | None, environ: Mapping[str, str]) -> Catalog:
    """The catalog, checked; CatalogError names every problem of the file."""
    return load_catalog(catalog_path(configured), environ)


def open_catalog(configured: Path | None, environ: Mapping[str, str]) -> Catalog:
    """A process's catalog, read once at its entry point: checked, and its event schemas
    known to the codec from then on."""
    catalog = read_catalog(configured, environ)
    register_event_schemas(catalog)
    return catalog
