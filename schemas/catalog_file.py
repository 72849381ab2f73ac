"""Reading a catalog file: YAML in, a checked `Catalog` out, or every problem at once.

Each problem names the file, the entry (`notifications.welcome`) and the field
(`channels.whatsapp.to`), and says what is wrong without echoing a value: a connection
setting may hold a secret. Secrets are `${VARIABLE}` references, resolved from the
environment given here (read once, at the entry point); a literal secret is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import yaml
from pydantic import ValidationError

from herald.schemas.catalog_model import (
    CHANNEL_PATTERN,
    EVENT_TYPE_PATTERN,
    NAME_PATTERN,
    RENDERING_KINDS,
    RESERVED_CHANNELS,
    RESERVED_EVENT_KINDS,
    Catalog,
)
from herald.schemas.catalog_refs import reference_problems
from herald.schemas.templates import SUFFIX, TemplateSet

_REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEY = re.compile(r"(key|secret|token|password)", re.IGNORECASE)
_SECTIONS = ("events", "notifications", "channels")


@dataclass(frozen=True)
class Problem:
    file: str
    entry: str  # "notifications.welcome", or "(catalog)" for the whole file
    field: str  # dotted, within the entry; "" when the entry itself is wrong
    message: str

    def __str__(self) -> str:
        where = f"{self.entry}.{self.field}" if self.field else self.entry
        return f"{self.file}: {where}: {self.message}"


class CatalogError(ValueError):
    """A catalog that does not check; `problems` lists every one, each naming where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_catalog(path: Path, environ: Mapping[str, str], *, connections: bool = True) -> Catalog:
    """The checked catalog of the file at `path`; CatalogError naming every problem otherwise.

    `connections=False` reads its shape only: a channel's connection may name variables that
    are not set here and is not checked (the manifests rendered for another machine, whose
    processes check it when they start)."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([Problem(shown, "(catalog)", "", f"cannot be read: {exc.strerror}")]) from None
    document = _parsed_yaml(text, shown)
    problems = _shape_problems(document, shown)
    if problems:
        raise CatalogError(problems)
    document, problems = _resolved_references(document, shown, environ, connections)
    try:
        catalog = Catalog.model_validate({**document, "source": shown})
    except ValidationError as exc:
        raise CatalogError(problems + _validation_problems(exc, shown)) from None
    schemas, earlier, schema_problems = _event_schemas(catalog, path.parent, shown)
    catalog = catalog.model_copy(update={"event_schemas": schemas, "earlier_event_schemas": earlier,
                                         "template_dir": str(path.parent / catalog.templates)})
    problems += _name_problems(catalog, shown) + schema_problems + _template_problems(catalog, shown)
    if not schema_problems:
        problems += [Problem(shown, *where, message)
                     for *where, message in reference_problems(catalog, connections=connections)]
    if problems:
        raise CatalogError(problems)
    return catalog


class _BadKey(yaml.YAMLError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _StrictLoader(yaml.SafeLoader):
    """YAML's mappings keep the last of two equal keys; a catalog must not say a name twice."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        line = key_node.start_mark.line + 1
        if isinstance(key, bool):  # YAML 1.1 reads on, off, yes and no as true and false
            raise _BadKey(key_node.value, f"{key_node.value!r} on line {line} reads as {str(key).lower()}: "
                                          "quote it")
        if key in seen:
            raise _BadKey(str(key), f"{key} is declared twice (again on line {line})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _parsed_yaml(text: str, shown: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _BadKey as exc:
        raise CatalogError([Problem(shown, "(catalog)", exc.key, str(exc))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "is not valid YAML"
        raise CatalogError([Problem(shown, "(catalog)", "", f"is not valid YAML{at}: {reason}")]) from None


def _shape_problems(document: Any, shown: str) -> list[Problem]:
    if not isinstance(document, dict):
        return [Problem(shown, "(catalog)", "", "must be a mapping with name, events, notifications "
                                                "and channels")]
    return [Problem(shown, "(catalog)", key, "is set by Herald, not by the file")
            for key in ("source", "event_schemas", "earlier_event_schemas", "template_dir")
            if key in document]


def _resolved_references(document: dict[str, Any], shown: str, environ: Mapping[str, str],
                         connections: bool = True) -> tuple[dict[str, Any], list[Problem]]:
    """Each channel's connection with its ${VARIABLE}s filled in; literal secrets refused."""
    channels = document.get("channels")
    if not isinstance(channels, dict):
        return document, []
    problems: list[Problem] = []
    resolved_channels = {}
    for name, channel in channels.items():
        connection = channel.get("connection") if isinstance(channel, dict) else None
        if not isinstance(connection, dict):
            resolved_channels[name] = channel
            continue
        resolved = {}
        for key, value in connection.items():
            field = f"connection.{key}"
            if _SECRET_KEY.search(str(key)) and not (isinstance(value, str) and _REFERENCE.fullmatch(value)):
                problems.append(Problem(shown, f"channels.{name}", field,
                                        "is a secret: write ${VARIABLE}, never the value"))
            resolved[key], unset = _filled(value, environ)
            problems += [] if not connections else [Problem(shown, f"channels.{name}", field,
                                 f"needs the environment variable {var}, which is not set") for var in unset]
        resolved_channels[name] = {**channel, "connection": resolved}
    return {**document, "channels": resolved_channels}, problems


def catalog_variables(path: Path) -> dict[str, bool]:
    """The environment variables the catalog's connections read, each with whether it has a
    default (`${SMTP_HOST:-127.0.0.1}`); CatalogError when the file does not parse."""
    document = _parsed_yaml(path.read_text(encoding="utf-8"), str(path))
    channels = document.get("channels") if isinstance(document, dict) else None
    found: dict[str, bool] = {}
    for channel in channels.values() if isinstance(channels, dict) else ():
        connection = channel.get("connection") if isinstance(channel, dict) else None
        for value in connection.values() if isinstance(connection, dict) else ():
            for item in value if isinstance(value, list) else [value]:
                for match in _REFERENCE.finditer(str(item)):
                    found[match.group(1)] = found.get(match.group(1), True) and match.group(2) is not None
    return found


def _filled(value: Any, environ: Mapping[str, str]) -> tuple[Any, list[str]]:
    """`value` with its ${VARIABLE}s filled in, and the variables that were not set."""
    unset: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        variable, default = match.group(1), match.group(2)
        if variable in environ:
            return environ[variable]
        if default is None:
            unset.append(variable)
            return ""
        return default

    if isinstance(value, list):
        return tuple(_REFERENCE.sub(substitute, str(item)) for item in value), unset
    return (_REFERENCE.sub(substitute, value) if isinstance(value, str) else value), unset


def _validation_problems(exc: ValidationError, shown: str) -> list[Problem]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] in _SECTIONS and len(loc) >= 2:
            entry, field = f"{loc[0]}.{loc[1]}", ".".join(loc[2:])
        else:
            entry, field = "(catalog)", ".".join(loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a setting of this entry"
        problems.append(Problem(shown, entry, field, message))
    return problems


def _name_problems(catalog: Catalog, shown: str) -> list[Problem]:
    problems = []
    rules = (("events", catalog.events, NAME_PATTERN), ("notifications", catalog.notifications, NAME_PATTERN),
             ("channels", catalog.channels, CHANNEL_PATTERN))
    for section, entries, pattern in rules:
        for name in entries:
            if not re.match(pattern, name):
                problems.append(Problem(shown, f"{section}.{name}", "", f"the name must match {pattern}"))
    for channel in catalog.channels:
        if channel in RESERVED_CHANNELS:
            problems.append(Problem(shown, f"channels.{channel}", "",
                                    f"notifications.{channel} is Herald's own topic; choose another name"))
    for kind, spec in catalog.events.items():
        if kind in RESERVED_EVENT_KINDS:
            problems.append(Problem(shown, f"events.{kind}", "", "is Herald's own event kind (the gateway "
                                                                 "sessions); choose another name"))
        for n, event_type in enumerate(spec.types):
            if not re.match(EVENT_TYPE_PATTERN, event_type) or not event_type.startswith(f"{kind}."):
                problems.append(Problem(shown, f"events.{kind}", f"types.{n}",
                                        f"must be '{kind}.<what>', lower case"))
    return problems


def _template_problems(catalog: Catalog, shown: str) -> list[Problem]:
    """Every notification a rendering channel sends has a template file that parses."""
    templates = TemplateSet(catalog.template_dir)
    problems = []
    for name, spec in catalog.notifications.items():
        rendering = [c for c in spec.channels if c in catalog.channels
                     and catalog.channels[c].kind in RENDERING_KINDS]
        if not rendering:
            continue
        template = spec.template or name
        files = sorted(p.name for p in templates.folder.glob(f"{template}*{SUFFIX}")
                       if p.name.split(".")[0] == template)
        if not files:
            problems.append(Problem(shown, f"notifications.{name}", "template",
                                    f"channel {rendering[0]} renders it: {template}{SUFFIX} is not in "
                                    f"{catalog.templates}/"))
        problems += [Problem(shown, f"notifications.{name}", "template", problem)
                     for problem in filter(None, map(templates.syntax_problem, files))]
    return problems


def _event_schemas(catalog: Catalog, base: Path, shown: str) -> tuple[
        dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], list[Problem]]:
    """Each event kind's Avro schema (its JSON) and its earlier versions', parsed to be sure."""
    schemas: dict[str, dict[str, Any]] = {}
    earlier: dict[str, list[dict[str, Any]]] = {}
    problems = []
    for kind, spec in catalog.events.items():
        files = [("schema", spec.schema_file)]
        files += [(f"earlier_schemas.{n}", f) for n, f in enumerate(spec.earlier_schemas)]
        for field, file_name in files:
            schema, problem = _avro_schema(base / file_name, file_name, must_be_record=True)
            if problem is not None:
                problems.append(Problem(shown, f"events.{kind}", field, problem))
            elif field == "schema":
                schemas[kind] = schema
            else:
                earlier.setdefault(kind, []).append(schema)
    return schemas, earlier, problems


def _avro_schema(path: Path, file_name: str, *, must_be_record: bool) -> tuple[Any, str | None]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        fastavro.parse_schema(schema, named_schemas={})
    except OSError as exc:
        return None, f"cannot read {file_name}: {exc.strerror}"
    except Exception as exc:  # json and fastavro raise many types for a bad schema
        return None, f"{file_name} is not an Avro schema: {_first_line(exc)}"
    if must_be_record and (not isinstance(schema, dict) or schema.get("type") != "record"):
        return None, f"{file_name} must be an Avro record"
    return schema, None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
