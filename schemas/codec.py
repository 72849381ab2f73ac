"""Avro values in the Confluent wire format: magic byte 0, a 4-byte schema id, the Avro body.

Herald's own contracts have fixed ids here; the catalog's event schemas are registered at
the entry point (`register_schema`). Until a Schema Registry assigns them, ids are part of
the contract: never reused or renumbered.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn

import fastavro
from fastavro.validation import ValidationError, validate

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

# Herald's own contracts: schema name -> (id of its current version, file in avro/).
SCHEMA_FILES: dict[str, tuple[int, str]] = {
    "herald.SessionEvent": (4, "session_event.avsc"),
    "herald.GatewayObservation": (9, "gateway_observation.avsc"),
    "herald.SessionMismatch": (10, "session_mismatch.avsc"),
    "herald.NotificationRequest": (12, "notification_request.avsc"),
    "herald.NotificationStatus": (13, "notification_status.avsc"),
    "herald.MissingNotification": (14, "missing_notification.avsc"),
    "herald.NotificationStatusStats": (15, "notification_status_stats.avsc"),
}

# Ids of earlier versions, still read: id -> (schema name, version in avro/history/). Data
# written with one is read as the current version: fields by name or alias, the schema's
# `herald.upgrade` for values an earlier version kept elsewhere, defaults for the rest.
# (1 and 7 are an example's event schema, declared by its catalog.)
EARLIER_VERSIONS: dict[int, tuple[str, str]] = {
    2: ("herald.NotificationRequest", "v1"),
    3: ("herald.NotificationStatus", "v1"),
    5: ("herald.NotificationStatus", "v2"),
    6: ("herald.NotificationRequest", "v2"),
    8: ("herald.MissingNotification", "v1"),
    11: ("herald.NotificationStatusStats", "v1"),
}


@dataclass(frozen=True)
class _Schema:
    name: str
    schema_id: int
    json: dict[str, Any]
    parsed: Any


@dataclass(frozen=True)
class _Writer:
    name: str
    parsed: Any
    current: bool  # written with the current version: read as is


_CURRENT: dict[str, _Schema] = {}
_WRITERS: dict[int, _Writer] = {}


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
    """The JSON of one of Herald's schema files, or of a historical version (e.g. 'v1')."""
    base = resources.files("herald.schemas") / "avro"
    if history is not None:
        base = base / "history" / file_name.removesuffix(".avsc")
        file_name = f"{history}.avsc"
    return json.loads((base / file_name).read_text(encoding="utf-8"))


def full_name(schema: Mapping[str, Any]) -> str:
    name, namespace = str(schema["name"]), schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def register_schema(schema: dict[str, Any], schema_id: int,
                    earlier: Mapping[int, dict[str, Any]] | None = None) -> str:
    """Make a schema (and the ids of its earlier versions) known to `encode` and `decode`;
    returns its full name. An id already naming another schema is refused."""
    name = full_name(schema)
    for known_id, version in {schema_id: schema, **(earlier or {})}.items():
        known = _WRITERS.get(known_id)
        if known is not None and known.name != name:
            raise ValueError(f"schema id {known_id} already names {known.name}, not {name}")
        _WRITERS[known_id] = _Writer(name, fastavro.parse_schema(version, named_schemas={}),
                                     current=version is schema)
    _CURRENT[name] = _Schema(name, schema_id, schema, _WRITERS[schema_id].parsed)
    return name


def _register_herald_schemas() -> None:
    for name, (schema_id, file_name) in SCHEMA_FILES.items():
        earlier = {i: load_schema_json(file_name, version)
                   for i, (n, version) in EARLIER_VERSIONS.items() if n == name}
        register_schema(load_schema_json(file_name), schema_id, earlier)


def schema_json(schema_name: str) -> dict[str, Any]:
    """The current version's JSON, with the attributes Avro ignores (such as `maxLength`)."""
    return _lookup(schema_name).json


def parsed_schema(schema_name: str) -> Any:
    return _lookup(schema_name).parsed


def _lookup(schema_name: str) -> _Schema:
    try:
        return _CURRENT[schema_name]
    except KeyError:
        raise KeyError(f"unknown schema {schema_name!r}; known: {sorted(_CURRENT)}") from None


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
    schema = _lookup(schema_name)
    body = io.BytesIO()
    body.write(_HEADER.pack(MAGIC_BYTE, schema.schema_id))
    fastavro.schemaless_writer(body, schema.parsed, record)
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
    writer = _WRITERS.get(schema_id)
    if writer is None:
        raise UndecodableRecord(f"unknown schema id {schema_id}")
    body = io.BytesIO(data[_HEADER.size :])
    try:
        record = fastavro.schemaless_reader(body, writer.parsed, None)
    except Exception as exc:  # fastavro raises many types for corrupt bodies
        raise UndecodableRecord(f"corrupt {writer.name} body: {exc!r}") from None
    if body.tell() != len(data) - _HEADER.size:
        raise UndecodableRecord(f"{writer.name} body has trailing bytes")
    if not writer.current:
        record = upgraded(record, _lookup(writer.name).json)
    return Decoded(writer.name, record)


def upgraded(record: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """A record of an earlier version as the current version: each field by its name or an
    alias, else as the schema's `herald.upgrade` builds it from earlier fields, else its default.
    (Not Avro's resolution: a catalog's name was an enum once, and is a string now.)"""
    rules = current.get("herald.upgrade", {})
    result: dict[str, Any] = {}
    for field in current["fields"]:
        name = field["name"]
        found = next((n for n in (name, *field.get("aliases", ())) if n in record), None)
        if found is not None:
            result[name] = record[found]
        elif name in rules:
            rule = rules[name]
            result[name] = ({k: str(record.get(v, "")) for k, v in rule.items()} if isinstance(rule, dict)
                            else record.get(rule))
        elif "default" in field:
            default = field["default"]
            result[name] = type(default)(default) if isinstance(default, dict | list) else default
        else:
            raise UndecodableRecord(f"{full_name(current)}: an earlier version has no {name}")
    return result


def decode_expecting(data: bytes | None, schema_name: str) -> dict[str, Any]:
    """Decode and insist on one schema, so a record on the wrong topic is rejected clearly."""
    decoded = decode(data)
    if decoded.schema_name != schema_name:
        raise UndecodableRecord(f"expected {schema_name}, got {decoded.schema_name}")
    return decoded.record


_register_herald_schemas()
