"""The example catalogs as tests use them, and catalogs written by a test from one of them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.proving.catalogs import Change, write_catalog
from herald.schemas.catalog_model import Catalog


@cache
def example(name: str = "registrations") -> Catalog:
    """An example's catalog, read as a process reads it (its event schemas made known)."""
    return open_catalog(example_catalog_path(name), {})


def written_catalog(folder: Path, change: Change | None = None,
                    name: str = "registrations") -> tuple[Path, Catalog]:
    """An example's catalog changed by `change`, written to `folder`: its path, and it read back."""
    path = write_catalog(folder / f"{name}-catalog.yaml", name, *([change] if change else []))
    return path, open_catalog(path, {})
