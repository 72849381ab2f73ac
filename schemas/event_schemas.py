"""The catalog's event schemas, made known to the codec with their earlier versions; their
ids come from the schema registry."""

from __future__ import annotations

from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import full_name, register_schema


def event_schema_name(catalog: Catalog, kind: str) -> str:
    """The full Avro name of an event kind's schema, as `encode` and `decode` know it."""
    return full_name(catalog.event_schemas[kind])


def register_event_schemas(catalog: Catalog) -> None:
    """Every event kind's schema and its earlier versions, known to the codec from now on."""
    for kind in catalog.events:
        register_schema(catalog.event_schemas[kind], catalog.earlier_event_schemas.get(kind, ()))
