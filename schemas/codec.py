"""Avro values in the Confluent wire format: magic byte 0, a 4-byte schema id, the Avro body.

Schema ids are fixed here (no registry configured), so ecosystem tools that read the
Confluent framing can decode Herald's records once the same ids are registered.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, NoReturn

import fastavro
from fastavro.validation import ValidationError, validate

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

# Schema name -> (id of its current version, file). Every version has an id of its own, as
# in a Schema Registry: ids are part of the contract, never reused or renumbered.
SCHEMA_FILES: dict[str, tuple[int, str]] = {
    "herald.SessionEvent": (4, "session_event.avsc"),
    "herald.NotificationStatus": (5, "notification_status.avsc"),
    "herald.NotificationRequest": (6, "notification_request.avsc"),
    "herald.RegistrationEvent": (7, "registration_event.avsc"),
    "herald.MissingNotification": (8, "missing_notification.avsc"),
    "herald.GatewayObservation": (9, "gateway_observation.avsc"),
    "herald.SessionMismatch": (10, "session_mismatch.avsc"),
    "herald.NotificationStatusStats": (11, "notification_status_stats.avsc"),
}

# Ids of earlier versions, still read: id -> (schema name, version in avro/history/). Data
# written with one is resolved to the current version (Avro schema resolution).
EARLIER_VERSIONS: dict[int, tuple[str, str]] = {
    1: ("herald.RegistrationEvent", "v1"),
    2: ("herald.NotificationRequest", "v1"),
    3: ("herald.NotificationStatus", "v1"),
}


class SchemaViolation(ValueError):
    """A record does not match its schema; the message and `fields` name the offending fields,
    and `problems` says what is wrong with each ("phone must be a string"), never its value."""

    def __init__(self, message: str, fields: tuple[str, ...] = (), problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields
        self.problems = problems or (message,)


class UndecodableRecord(ValueError):
    """Bytes that are not a Herald record: wrong framing, unknown schema id or a corrupt body."""


@dataclass(frozen=True)
class Decoded:
    schema_name: str
    record: dict[str, Any]


def load_schema_json(file_name: str, history: str | None = None) -> dict[str, Any]:
    """The JSON of a schema file, or of one of its historical versions (e.g. 'v1')."""
    base = resources.files("herald.schemas") / "avro"
    if history is not None:
        base = base / "history" / file_name.removesuffix(".avsc")
        file_name = f"{history}.avsc"
    return json.loads((base / file_name).read_text(encoding="utf-8"))


@cache
def schema_json(schema_name: str) -> dict[str, Any]:
    """The current version's JSON, with the attributes Avro ignores (such as `maxLength`)."""
    return load_schema_json(_lookup(schema_name)[1])


@cache
def parsed_schema(schema_name: str) -> Any:
    _schema_id, file_name = _lookup(schema_name)
    return fastavro.parse_schema(load_schema_json(file_name), named_schemas={})


@cache
def _writer_schemas() -> dict[int, tuple[str, Any]]:
    """Schema id -> (schema name, the parsed schema the data was written with)."""
    writers = {schema_id: (name, parsed_schema(name)) for name, (schema_id, _f) in SCHEMA_FILES.items()}
    for schema_id, (name, version) in EARLIER_VERSIONS.items():
        file_name = _lookup(name)[1]
        writers[schema_id] = (name, fastavro.parse_schema(load_schema_json(file_name, version),
                                                          named_schemas={}))
    return writers


def _lookup(schema_name: str) -> tuple[int, str]:
    try:
        return SCHEMA_FILES[schema_name]
    except KeyError:
        raise KeyError(f"unknown schema {schema_name!r}; known: {sorted(SCHEMA_FILES)}") from None


def validate_record(schema_name: str, record: dict[str, Any]) -> None:
    """Raise SchemaViolation naming the field when `record` does not fit the schema.

    The message names each field and the type it needs, never the value: records carry
    personal data, and errors travel to HTTP callers and logs."""
    fields = parsed_schema(schema_name)["fields"]
    unknown = sorted(set(record) - {f["name"] for f in fields})
    if unknown:  # fastavro ignores them; a misspelt field must not vanish silently
        _violation(schema_name, {shown_name(name): "is no field of the schema" for name in unknown})
    missing = [f["name"] for f in fields if f["name"] not in record and "default" not in f]
    if missing:
        _violation(schema_name, dict.fromkeys(missing, "is required"))
    schema = parsed_schema(schema_name)
    # The quiet check first: with raise_errors, fastavro raises and catches an error for
    # every union branch a value does not match (each optional field's null), 3x the cost.
    if validate(record, schema, raise_errors=False, strict=True):
        return
    try:
        validate(record, schema, raise_errors=True, strict=True)
    except ValidationError as exc:
        paths = [_field_path(schema_name, error.field) for error in exc.errors]
        _violation(schema_name, {path: f"must be {describe_type(schema_name, path)}" for path in paths})


def _violation(schema_name: str, problems: dict[str, str]) -> NoReturn:
    """Raise SchemaViolation for {field path: what is wrong with it}."""
    said = tuple(f"{path} {problem}" for path, problem in problems.items())
    raise SchemaViolation(f"{schema_name}: {'; '.join(said)}", tuple(problems), said)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def shown_name(name: object) -> str:
    """A field name as an error may show it: anything but an Avro-like name could be data."""
    return name if isinstance(name, str) and _NAME.match(name) else "(a name that is no field name)"


def _field_path(schema_name: str, path: str | None) -> str:
    """fastavro's 'herald.X.a.b' as the record's own 'a.b'."""
    return (path or "").removeprefix(schema_name).removeprefix(".")


def describe_type(schema_name: str, path: str) -> str:
    """The type the top-level field of `path` needs, in words (for error messages)."""
    name = path.split(".", 1)[0]
    for field_schema in parsed_schema(schema_name)["fields"]:
        if field_schema["name"] == name:
            return _words(field_schema["type"])
    return "a record of the schema"


def _words(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " or ".join(_words(branch) for branch in avro_type)
    if isinstance(avro_type, str):
        words = {"null": "null", "string": "a string", "long": "an integer", "int": "an integer",
                 "boolean": "true or false", "double": "a number", "float": "a number"}
        return words.get(avro_type, avro_type)
    if avro_type.get("logicalType", "").startswith("timestamp"):
        return "a timestamp"
    kind = avro_type["type"]
    if kind == "enum":
        return "one of " + ", ".join(avro_type["symbols"])
    if kind == "map":
        return f"an object of {_words(avro_type['values']).removeprefix('a ').removeprefix('an ')}s"
    if kind == "array":
        return f"a list of {_words(avro_type['items']).removeprefix('a ').removeprefix('an ')}s"
    return "an object" if kind == "record" else _words(kind)


def encode(schema_name: str, record: dict[str, Any]) -> bytes:
    """Validate then serialise `record` in the Confluent wire format."""
    validate_record(schema_name, record)
    schema_id, _file = _lookup(schema_name)
    body = io.BytesIO()
    body.write(_HEADER.pack(MAGIC_BYTE, schema_id))
    fastavro.schemaless_writer(body, parsed_schema(schema_name), record)
    return body.getvalue()


def decode(data: bytes | None) -> Decoded:
    """Decode wire-format bytes; raise UndecodableRecord with the reason otherwise."""
    if data is None:
        raise UndecodableRecord("record has no value (null or tombstone)")
    if len(data) < _HEADER.size:
        raise UndecodableRecord(f"record is {len(data)} bytes, shorter than the 5-byte header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise UndecodableRecord(f"magic byte is {magic}, expected {MAGIC_BYTE}")
    writer = _writer_schemas().get(schema_id)
    if writer is None:
        raise UndecodableRecord(f"unknown schema id {schema_id}")
    schema_name, writer_schema = writer
    reader_schema = parsed_schema(schema_name)
    body = io.BytesIO(data[_HEADER.size :])
    try:
        record = fastavro.schemaless_reader(
            body, writer_schema, None if writer_schema is reader_schema else reader_schema)
    except Exception as exc:  # fastavro raises many types for corrupt bodies
        raise UndecodableRecord(f"corrupt {schema_name} body: {exc!r}") from None
    if body.tell() != len(data) - _HEADER.size:
        raise UndecodableRecord(f"{schema_name} body has trailing bytes")
    return Decoded(schema_name, record)


def decode_expecting(data: bytes | None, schema_name: str) -> dict[str, Any]:
    """Decode and insist on one schema, so a record on the wrong topic is rejected clearly."""
    decoded = decode(data)
    if decoded.schema_name != schema_name:
        raise UndecodableRecord(f"expected {schema_name}, got {decoded.schema_name}")
    return decoded.record
