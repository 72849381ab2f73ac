"""The references a catalog makes, checked: into its event schemas and between its entries.

Every key, recipient, parameter and guard names a field of the triggering event's schema,
with a type that fits its use; every trigger is a declared type of one kind; every channel
a notification names is declared, with the connection its kind needs. Each problem is
(entry, field, message).
"""

from __future__ import annotations

import base64
from typing import Any

from herald.schemas.catalog_model import Catalog, ChannelSpec, NotificationSpec
from herald.schemas.codec import full_name

Where = tuple[str, str, str]
_SCALARS = ("string", "int", "long", "float", "double", "boolean")
_NEEDED_CONNECTION = {"whatsapp-gateway": ("instances",), "email": ("url",), "email-smtp": ("host", "from"),
                      "webhook": ("secrets",)}
_URL_SETTINGS = {"whatsapp-gateway": "instances", "email": "url", "webhook": "url"}
SMTP_SECURITY = ("starttls", "tls", "none")


def reference_problems(catalog: Catalog, *, connections: bool = True) -> list[Where]:
    problems: list[Where] = []
    topics: dict[str, str] = {}
    record_names: dict[str, str] = {}
    for kind in catalog.events:
        problems += _event_kind_problems(catalog, kind)
        topic = catalog.topic_of(kind)
        if topic in topics:
            problems.append((f"events.{kind}", "topic", f"is also the topic of events.{topics[topic]}"))
        topics.setdefault(topic, kind)
        name = full_name(catalog.event_schemas[kind])
        if name in record_names:
            problems.append((f"events.{kind}", "schema",
                             f"declares {name}, as events.{record_names[name]} does"))
        record_names.setdefault(name, kind)
    partitions = {spec.partitions for spec in catalog.events.values()}
    if len(partitions) > 1:  # the missing detector reads them together, co-partitioned
        problems += [(f"events.{kind}", "partitions", "every event kind needs the same partitions "
                                                      "(the missing-notification detector joins them)")
                     for kind in list(catalog.events)[1:]]
    for name, notification in catalog.notifications.items():
        problems += _notification_problems(catalog, name, notification)
    for name, channel in catalog.channels.items() if connections else ():
        problems += _channel_problems(name, channel)
    return problems


def _event_kind_problems(catalog: Catalog, kind: str) -> list[Where]:
    spec, fields = catalog.events[kind], _fields(catalog.event_schemas[kind])
    entry, problems = f"events.{kind}", []
    settings = (("key", spec.key, ("string",)), ("workspace_field", spec.workspace_field, ("string",)),
                ("time_field", spec.time_field, ("timestamp",)))
    for setting, value, kinds in settings:
        if value is not None:
            problem = _needs(fields, value, kinds, nullable=False)
            if problem:
                problems.append((entry, setting, problem))
    problem = _needs(fields, "event_id", ("string",), nullable=False)
    if problem:  # every event carries its id: the event-id header, the dedupe key
        problems.append((entry, "schema", f"needs an event_id field (a string): {problem}"))
    if spec.type_field is not None:
        problem = _needs(fields, spec.type_field, ("string", "enum"), nullable=False)
        if problem:
            problems.append((entry, "type_field", problem))
        else:
            symbols = _symbols(fields[spec.type_field])
            for n, event_type in enumerate(spec.types):
                what = event_type.split(".", 1)[-1]
                if symbols is not None and what not in symbols:
                    problems.append((entry, f"types.{n}", f"'{what}' is no value of {spec.type_field} "
                                                          f"({', '.join(symbols)})"))
    return problems


def _notification_problems(catalog: Catalog, name: str, spec: NotificationSpec) -> list[Where]:
    entry, problems = f"notifications.{name}", []
    kinds = {catalog.event_kind_of(t) for t in spec.trigger}
    for n, event_type in enumerate(spec.trigger):
        kind = catalog.events.get(catalog.event_kind_of(event_type))
        if kind is None or event_type not in kind.types:
            problems.append((entry, f"trigger.{n}", f"'{event_type}' is no declared event type"))
    if len(kinds) > 1:
        return [*problems, (entry, "trigger", "the triggering types must all be of one event kind")]
    if problems:
        return problems
    fields = _fields(catalog.event_schemas[kinds.pop()])
    for channel, route in spec.channels.items():
        if channel not in catalog.channels:
            problems.append((entry, f"channels.{channel}", f"'{channel}' is no declared channel"))
        problem = _needs(fields, route.to, ("string",), nullable=False)
        if problem:
            problems.append((entry, f"channels.{channel}.to", problem))
    for param, field in spec.params.items():
        problem = _needs(fields, field, (*_SCALARS, "enum", "timestamp"), nullable=True)
        if problem:
            problems.append((entry, f"params.{param}", problem))
    for field, wanted in spec.when.items():
        problem = _needs(fields, field, (*_SCALARS, "enum"), nullable=True)
        symbols = None if problem else _symbols(fields[field])
        values = wanted if isinstance(wanted, tuple) else (wanted,)
        if not problem and symbols is not None and any(str(v) not in symbols for v in values):
            problem = f"may only be {', '.join(symbols)}"
        if problem:
            problems.append((entry, f"when.{field}", problem))
    return problems


def _channel_problems(name: str, spec: ChannelSpec) -> list[Where]:
    entry, problems = f"channels.{name}", []
    for setting in _NEEDED_CONNECTION[spec.kind]:
        if not spec.connection.get(setting):
            problems.append((entry, f"connection.{setting}", f"is required for a {spec.kind} channel"))
    setting = _URL_SETTINGS.get(spec.kind)
    for url in connection_list(spec, setting) if setting else ():
        if not url.startswith(("http://", "https://")):
            problems.append((entry, f"connection.{setting}", "must be http:// or https:// URLs"))
            break
    if spec.kind == "email-smtp":
        problems += _smtp_problems(entry, spec)
    if spec.kind == "webhook" and not all(map(_is_webhook_secret, connection_list(spec, "secrets"))):
        problems.append((entry, "connection.secrets",
                         "each secret must be whsec_ and base64 of 16 bytes or more (Standard Webhooks)"))
    return problems


def _smtp_problems(entry: str, spec: ChannelSpec) -> list[Where]:
    problems = []
    security = spec.connection.get("security", "starttls")
    if security not in SMTP_SECURITY:
        problems.append((entry, "connection.security", f"must be one of {', '.join(SMTP_SECURITY)}"))
    port = spec.connection.get("port", "0")
    if not (isinstance(port, str) and port.isdigit() and int(port) < 65536):
        problems.append((entry, "connection.port", "must be a port number"))
    connections = spec.connection.get("connections", "1")
    if not (isinstance(connections, str) and connections.isdigit() and 1 <= int(connections) <= 1000):
        problems.append((entry, "connection.connections", "must be a number of connections, 1 to 1000"))
    if "@" not in str(spec.connection.get("from", "@")):
        problems.append((entry, "connection.from", "must be an email address"))
    if bool(spec.connection.get("username")) != bool(spec.connection.get("password")):
        problems.append((entry, "connection", "username and password go together"))
    return problems


def _is_webhook_secret(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 16
    except ValueError:
        return False


def connection_list(spec: ChannelSpec, setting: str) -> tuple[str, ...]:
    """A connection setting as a list: given as one, or as one comma-separated text."""
    value = spec.connection.get(setting, ())
    items = value if isinstance(value, tuple) else tuple(value.split(","))
    return tuple(item.strip() for item in items if item.strip())


def _fields(schema: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in schema.get("fields", []) if isinstance(f, dict) and "name" in f}


def _needs(fields: dict[str, Any], field: str, kinds: tuple[str, ...], *, nullable: bool) -> str | None:
    """Why `field` cannot serve (None when it can): absent, or of a type not among `kinds`."""
    if field not in fields:
        return f"'{field}' is no field of the event's schema"
    branches = fields[field] if isinstance(fields[field], list) else [fields[field]]
    if "null" in branches and not nullable:
        return f"'{field}' may be null; it must always have a value here"
    found = [_kind(b) for b in branches if b != "null"]
    if len(found) != 1 or found[0] not in kinds:
        return f"'{field}' is {' or '.join(found) or 'null'}; it must be {' or '.join(kinds)}"
    return None


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, dict):
        if str(avro_type.get("logicalType", "")).startswith("timestamp"):
            return "timestamp"
        return str(avro_type.get("type"))
    return "union"


def _symbols(avro_type: Any) -> tuple[str, ...] | None:
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") == "enum":
            return tuple(branch["symbols"])
    return None
