"""Avro values in the Confluent wire format: magic byte 0, a 4-byte schema id, the Avro body.

Schema ids are a schema registry's: a process's entry point plugs one in (`use_schema_source`)
and the codec asks it for the id of each schema it writes and for the schema of each id it
meets, once per id per process. Herald's own contracts and the catalog's event schemas are
known here by name with their earlier versions, oldest first (what provisioning registers).
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NoReturn, Protocol

import fastavro
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")

# Herald's own contracts: schema name -> its file in avro/ (earlier versions: avro/history/).
SCHEMA_FILES: dict[str, str] = {
    "herald.SessionEvent": "session_event.avsc",
    "herald.GatewayObservation": "gateway_observation.avsc",
    "herald.SessionMismatch": "session_mismatch.avsc",
    "herald.NotificationRequest": "notification_request.avsc",
    "herald.NotificationStatus": "notification_status.avsc",
    "herald.MissingNotification": "missing_notification.avsc",
    "herald.NotificationStatusStats": "notification_status_stats.avsc",
    "herald.ChannelControl": "channel_control.avsc",
}
# A schema with this attribute says how values of its earlier versions that Avro's schema
# resolution cannot carry over are found (a name that was an enum once and is a string now).
UPGRADE_RULES = "herald.upgrade"


class SchemaSource(Protocol):
    """Where ids come from: a schema registry, plugged in at a process's entry point."""

    def id_of(self, schema_name: str, schema: Mapping[str, Any]) -> int:
        """The registry's id of this (registered) schema."""

    def schema_of(self, schema_id: int) -> dict[str, Any] | None:
        """The schema the registry knows by this id, or None when it knows no such id."""


@dataclass(frozen=True)
class _Schema:
    name: str
    json: dict[str, Any]
    parsed: Any
    history: tuple[dict[str, Any], ...]  # earlier versions, oldest first
    canonical: str
    earlier_canonical: frozenset[str]


@dataclass(frozen=True)
class _Writer:
    name: str
    parsed: Any
    how: str  # "current": read as is; "upgrade": Herald's earlier version; "resolve": Avro's resolution
    json: Mapping[str, Any]


_CURRENT: dict[str, _Schema] = {}
_IDS: dict[str, int] = {}  # schema name -> the registry's id of its current version
_WRITERS: dict[int, _Writer] = {}
_SOURCE: list[SchemaSource] = []  # none, or the one the entry point plugged in
# Timestamps a reader may take as the epoch numbers written instead of datetimes: fastavro
# builds a datetime per value, and reading the router's events without that was 7.5 -> 5.1 µs.
EPOCH_UNITS = {"timestamp-millis": 1000, "timestamp-micros": 1_000_000}  # per second
_EPOCH_CURRENT: dict[str, Any] = {}  # schema name -> its current version so parsed
_EPOCH_PARSED: dict[int, tuple[Any, Any]] = {}  # schema id -> (writer, reader) so parsed, to read


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


def register_schema(schema: dict[str, Any], earlier: Sequence[dict[str, Any]] = ()) -> str:
    """Make a schema and its earlier versions (oldest first) known to `encode` and `decode`;
    returns its full name. Its id comes from the schema registry."""
    name, canonical = full_name(schema), _canonical(schema)
    known = _CURRENT.get(name)
    if known is not None and known.canonical != canonical:  # another version: its id is another
        _IDS.pop(name, None)
    # avro/history/ ends with a copy of the current version, which is registered once.
    history = {_canonical(version): version for version in earlier}
    history.pop(canonical, None)
    _CURRENT[name] = _Schema(name, schema, fastavro.parse_schema(schema, named_schemas={}),
                             tuple(history.values()), canonical, frozenset(history))
    _EPOCH_CURRENT.pop(name, None)
    _EPOCH_PARSED.clear()  # their readers may be the version just replaced
    return name


def _canonical(schema: Mapping[str, Any]) -> str:
    return str(to_parsing_canonical_form(fastavro.parse_schema(dict(schema), named_schemas={})))


def schema_versions(schema_name: str) -> tuple[dict[str, Any], ...]:
    """Every version of a schema, oldest first, ending with the current one."""
    schema = _lookup(schema_name)
    return (*schema.history, schema.json)


def needs_own_upgrade(schema_name: str) -> bool:
    """Whether data of its earlier versions is read with Herald's upgrade rules, not Avro's."""
    return UPGRADE_RULES in _lookup(schema_name).json


def known_schema_names() -> tuple[str, ...]:
    return tuple(_CURRENT)


def plugged_schema_source() -> SchemaSource | None:
    return _SOURCE[0] if _SOURCE else None


def use_schema_source(source: SchemaSource | None) -> None:
    """Plug in (or, with None, unplug) the schema registry the process asks for ids. The ids
    learnt so far are forgotten: another registry gives other ids (and connecting learns the
    current ones again at once)."""
    _SOURCE[:] = [source] if source is not None else []
    _IDS.clear()
    _WRITERS.clear()
    _EPOCH_PARSED.clear()


def assign_schema_id(schema_name: str, schema_id: int) -> None:
    """The registry's id of a schema's current version; an id naming another schema is refused."""
    known = _WRITERS.get(schema_id)
    if known is not None and known.name != schema_name:
        raise ValueError(f"schema id {schema_id} already names {known.name}, not {schema_name}")
    schema = _lookup(schema_name)
    _IDS[schema_name] = schema_id
    _WRITERS[schema_id] = _Writer(schema_name, schema.parsed, "current", schema.json)
    _EPOCH_PARSED.pop(schema_id, None)


def schema_id(schema_name: str) -> int:
    """The id `encode` writes for a schema: asked of the registry once, then kept."""
    found = _IDS.get(schema_name)
    if found is None:
        if not _SOURCE:
            raise LookupError(f"no schema registry id for {schema_name}: the process has no schema "
                              "registry plugged in (herald.infra.schema_registry.connect_schema_registry)")
        found = _SOURCE[0].id_of(schema_name, _lookup(schema_name).json)
        assign_schema_id(schema_name, found)
    return found


def _register_herald_schemas() -> None:
    for file_name in SCHEMA_FILES.values():
        register_schema(load_schema_json(file_name), earlier_versions(file_name))


def earlier_versions(file_name: str) -> list[dict[str, Any]]:
    """The earlier versions of one of Herald's schema files (avro/history/<name>/v1.avsc ...)."""
    folder = resources.files("herald.schemas") / "avro" / "history" / file_name.removesuffix(".avsc")
    versions = sorted((int(f.name[1:].removesuffix(".avsc")), f.name.removesuffix(".avsc"))
                      for f in folder.iterdir() if re.fullmatch(r"v\d+\.avsc", f.name))
    return [load_schema_json(file_name, version) for _number, version in versions]


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
    return encode_derived(schema_name, record)


def encode_derived(schema_name: str, record: dict[str, Any], epoch_times: bool = False) -> bytes:
    """Serialise a record Herald built itself from a decoded, valid one (the router's requests),
    without validating it again: validation was half an encode's cost. fastavro still raises
    (TypeError, ValueError) on a value of the wrong type; the caller dead-letters it then.
    `epoch_times`: its timestamps are numbers, never datetimes (the same bytes, 1.4 µs sooner)."""
    parsed = _epoch_current(schema_name) if epoch_times else _lookup(schema_name).parsed
    body = io.BytesIO()
    body.write(_HEADER.pack(MAGIC_BYTE, _IDS.get(schema_name) or schema_id(schema_name)))
    fastavro.schemaless_writer(body, parsed, record)
    return body.getvalue()


def _epoch_current(schema_name: str) -> Any:
    """The current version parsed without timestamp types, once per version."""
    parsed = _EPOCH_CURRENT.get(schema_name)
    if parsed is None:
        parsed = fastavro.parse_schema(_without_timestamp_types(_lookup(schema_name).json), named_schemas={})
        _EPOCH_CURRENT[schema_name] = parsed
    return parsed


def decode(data: bytes | None, epoch_times: bool = False) -> Decoded:
    """Decode wire-format bytes; raise UndecodableRecord with the reason otherwise.
    `epoch_times`: timestamps (`EPOCH_UNITS`) as the numbers written, not as datetimes."""
    if data is None:
        raise UndecodableRecord("record has no value (null or tombstone)")
    if len(data) < _HEADER.size:
        raise UndecodableRecord(f"record is {len(data)} bytes, shorter than the 5-byte header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise UndecodableRecord(f"magic byte is {magic}, expected {MAGIC_BYTE}")
    writer = _WRITERS.get(schema_id) or _writer_from_registry(schema_id)
    body = io.BytesIO(data[_HEADER.size :])
    if epoch_times:
        writer_schema, reader = _EPOCH_PARSED.get(schema_id) or _parse_epoch_times(schema_id, writer)
    else:
        writer_schema = writer.parsed
        reader = _CURRENT[writer.name].parsed if writer.how == "resolve" else None
    try:
        record = fastavro.schemaless_reader(body, writer_schema, reader)
    except Exception as exc:  # fastavro raises many types for corrupt bodies and failed resolutions
        raise UndecodableRecord(f"corrupt {writer.name} body: {exc!r}") from None
    if body.tell() != len(data) - _HEADER.size:
        raise UndecodableRecord(f"{writer.name} body has trailing bytes")
    if writer.how == "upgrade":
        record = upgraded(record, _lookup(writer.name).json)
    return Decoded(writer.name, record)


def _parse_epoch_times(schema_id: int, writer: _Writer) -> tuple[Any, Any]:
    """The writer's (and, to resolve, the reader's) schema parsed without timestamp types."""
    if writer.how == "current":
        parsed = (_epoch_current(writer.name), None)
    else:
        reader = _epoch_current(writer.name) if writer.how == "resolve" else None
        parsed = (fastavro.parse_schema(_without_timestamp_types(writer.json), named_schemas={}), reader)
    _EPOCH_PARSED[schema_id] = parsed
    return parsed


def _without_timestamp_types(schema: Any) -> Any:
    """A schema's JSON with `EPOCH_UNITS` logical types dropped: those values read as numbers."""
    if isinstance(schema, dict):
        if schema.get("logicalType") in EPOCH_UNITS:
            return {k: v for k, v in schema.items() if k != "logicalType"}
        return {k: _without_timestamp_types(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_without_timestamp_types(item) for item in schema]
    return schema


def epoch_time_fields(schema_name: str) -> dict[str, int]:
    """The top-level fields a reader with `epoch_times` gets as numbers: name -> units per second."""
    found = {}
    for field in _lookup(schema_name).json["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if isinstance(branch, dict) and branch.get("logicalType") in EPOCH_UNITS:
                found[field["name"]] = EPOCH_UNITS[branch["logicalType"]]
    return found


def _writer_from_registry(schema_id: int) -> _Writer:
    """The writer's schema of an id met for the first time, asked of the registry (which may
    keep the caller waiting while it is unreachable); an id it does not know is undecodable."""
    if not _SOURCE:
        raise UndecodableRecord(f"unknown schema id {schema_id} (no schema registry to ask)")
    schema = _SOURCE[0].schema_of(schema_id)
    if schema is None:
        raise UndecodableRecord(f"schema id {schema_id} is unknown to the schema registry")
    try:
        name, canonical = full_name(schema), _canonical(schema)
    except Exception:  # a registry may hold any schema under an id: not one of ours
        raise UndecodableRecord(f"schema id {schema_id} is not an Avro record schema") from None
    current = _CURRENT.get(name)
    if current is None:
        raise UndecodableRecord(f"schema id {schema_id} is {name}, which this process does not read")
    if canonical == current.canonical:
        writer = _Writer(name, current.parsed, "current", current.json)
    else:
        how = "upgrade" if canonical in current.earlier_canonical else "resolve"
        writer = _Writer(name, fastavro.parse_schema(schema, named_schemas={}), how, schema)
    _WRITERS[schema_id] = writer
    return writer


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


def decode_expecting(data: bytes | None, schema_name: str, epoch_times: bool = False) -> dict[str, Any]:
    """Decode and insist on one schema, so a record on the wrong topic is rejected clearly."""
    decoded = decode(data, epoch_times)
    if decoded.schema_name != schema_name:
        raise UndecodableRecord(f"expected {schema_name}, got {decoded.schema_name}")
    return decoded.record


_register_herald_schemas()
