"""Catalogs the proving tools and tests write: an example's, changed (fast retries, a channel's
URLs, a new notification), to a file a process is then pointed at with HERALD_CATALOG."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from herald.infra.catalogs import example_catalog_path

Change = Callable[[dict[str, Any]], None]
# The variables the example catalogs read their providers' URLs from.
GATEWAY_URLS_VARIABLE = "WHATSAPP_GATEWAY_URLS"
EMAIL_URL_VARIABLE = "EMAIL_PROVIDER_URL"


def example_document(example: str = "registrations") -> dict[str, Any]:
    """An example's catalog file as data, its schema and template paths made absolute (to write
    it elsewhere)."""
    path = example_catalog_path(example)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["templates"] = str(path.parent / document.get("templates", "templates"))
    for spec in document["events"].values():
        spec["schema"] = str(path.parent / spec["schema"])
        spec["earlier_schemas"] = [str(path.parent / f) for f in spec.get("earlier_schemas", [])]
    return document


def write_catalog(path: Path, example: str = "registrations", *changes: Change) -> Path:
    """An example's catalog with `changes` applied, written to `path`."""
    document = copy.deepcopy(example_document(example))
    for change in changes:
        change(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def with_retries(**retry: Any) -> Change:
    """Every channel retrying as `retry` says (catalog retry settings: tiers, base, cap, ...)."""
    def change(document: dict[str, Any]) -> None:
        for channel in document["channels"].values():
            channel["retry"] = {**channel.get("retry", {}), **retry}
    return change


def with_concurrency(concurrency: int) -> Change:
    def change(document: dict[str, Any]) -> None:
        for channel in document["channels"].values():
            channel["concurrency"] = concurrency
    return change


def with_providers(whatsapp: tuple[str, ...], email: str) -> Change:
    """The channels pointed at these providers, as literal URLs in the file."""
    def change(document: dict[str, Any]) -> None:
        for channel in document["channels"].values():
            if channel["kind"] == "whatsapp-gateway":
                channel["connection"]["instances"] = list(whatsapp)
            else:
                channel["connection"]["url"] = email
    return change


def provider_environ(whatsapp: tuple[str, ...], email: str) -> Mapping[str, str]:
    """The variables an example catalog reads its providers' URLs from, for these providers."""
    return {GATEWAY_URLS_VARIABLE: ",".join(whatsapp), EMAIL_URL_VARIABLE: email}
