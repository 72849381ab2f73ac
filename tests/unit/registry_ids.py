"""Ids as the unit tests' registry (confluent-kafka's mock) gave them, and records framed with them."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema

from herald.schemas.codec import _SOURCE, schema_versions


def _source() -> Any:
    assert _SOURCE, "the unit tests' schema registry is plugged in by tests/unit/conftest.py"
    return _SOURCE[0]


def registered_id(schema_name: str, version: dict[str, Any] | None = None) -> int:
    """The id the registry gave a version of a schema (the current one when None)."""
    source = _source()
    schema = Schema(json.dumps(version or schema_versions(schema_name)[-1]), "AVRO")
    return int(source.client.lookup_schema(source.subjects[schema_name], schema).schema_id)


def written_with(schema_name: str, writer: dict[str, Any], record: dict[str, Any]) -> bytes:
    """`record` as a producer of `writer` (a version registered now, if it was not) frames it."""
    source = _source()
    subject = source.subjects[schema_name]
    return framed(source.client.register_schema(subject, Schema(json.dumps(writer), "AVRO")), writer, record)


def framed(schema_id: int, writer: dict[str, Any], record: dict[str, Any]) -> bytes:
    """`record` in the Confluent wire format, written with `writer` under `schema_id`."""
    body = io.BytesIO()
    body.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(body, fastavro.parse_schema(writer, named_schemas={}), record)
    return body.getvalue()
