"""Which catalog a process runs: HERALD_CATALOG, or the registrations example when unset."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from herald.schemas.catalog_file import load_catalog
from herald.schemas.catalog_model import Catalog

# The example `make demo` plays; an installed Herald carries it as package data.
DEFAULT_EXAMPLE = "registrations"


def example_catalog_path(example: str) -> Path:
    """The catalog file of one of the examples shipped with Herald."""
    path = Path(str(resources.files(f"herald.examples.{example}") / "catalog.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no example catalog {example!r} at {path}")
    return path


def catalog_path(configured: Path | None) -> Path:
    return configured if configured is not None else example_catalog_path(DEFAULT_EXAMPLE)


def read_catalog(configured: Path | None, environ: Mapping[str, str]) -> Catalog:
    """The process's catalog, checked; CatalogError names every problem of the file."""
    return load_catalog(catalog_path(configured), environ)
