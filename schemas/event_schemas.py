"""The catalog's event schemas, made known to the codec with their ids.

Until a Schema Registry assigns ids, an event kind's id is the one its catalog entry pins
(`schema_id`), else one derived from the schema's canonical form, so every process that
reads the same file uses the same id.
"""

from __future__ import annotations

from typing import Any

from fastavro.schema import fingerprint, to_parsing_canonical_form

from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import full_name, register_schema

_FIRST_DERIVED_ID = 1_000_000  # below: ids fixed by Herald or pinned by catalogs
_DERIVED_IDS = 2_000_000_000


def derived_schema_id(schema: dict[str, Any]) -> int:
    digest = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    return _FIRST_DERIVED_ID + int(digest, 16) % _DERIVED_IDS


def event_schema_name(catalog: Catalog, kind: str) -> str:
    """The full Avro name of an event kind's schema, as `encode` and `decode` know it."""
    return full_name(catalog.event_schemas[kind])


def register_event_schemas(catalog: Catalog) -> None:
    """Every event kind's schema and its earlier versions, known to the codec from now on."""
    for kind, spec in catalog.events.items():
        schema = catalog.event_schemas[kind]
        schema_id = spec.schema_id if spec.schema_id is not None else derived_schema_id(schema)
        register_schema(schema, schema_id, catalog.earlier_event_schemas.get(kind, {}))
