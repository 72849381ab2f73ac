"""The declared catalog: a user's event kinds, notifications and channels, as typed frozen models.

A catalog file (YAML) is read once at the entry point (`schemas.catalog_file.load_catalog`)
and everything domain-specific follows from it: topics, ingest validation, routing,
missing-notification expectations, stats, filters, health. These models only say what a
well-formed entry is; the references between entries and into the Avro schemas are checked
by `schemas.catalog_file`, which names the file, the entry and the field of every error.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# Names become topic names, header values and keys: short, lower case, no dots.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
CHANNEL_PATTERN = r"^[a-z][a-z0-9_-]{0,30}$"
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}\.[a-z][a-z0-9_]{0,47}$"
# Each kind is a plugin of the delivery worker (consumers/channel_kinds.py): "email" posts JSON to
# an HTTP email API that renders its own templates, "email-smtp" renders the notification's
# template and sends it over SMTP, "webhook" posts the event, signed per Standard Webhooks.
CHANNEL_KINDS = ("whatsapp-gateway", "email", "email-smtp", "webhook")
ChannelKind = Literal["whatsapp-gateway", "email", "email-smtp", "webhook"]
RENDERING_KINDS = ("email-smtp",)  # the kinds that send the text of the notification's template
JITTERS = ("full", "equal", "decorrelated")
MAX_RETRY_TIERS = 3
# The gateway channel's own event kind: declared by Herald, never by a catalog.
RESERVED_EVENT_KINDS = ("session",)
# notifications.status and notifications.missing are Herald's own topics, not channels'.
RESERVED_CHANNELS = ("status", "missing")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration_s(value: Any) -> float:
    """Seconds from a number (seconds) or a text such as `300ms`, `30s`, `5m`, `2h`, `1d`."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError("must be a duration such as 30s, 5m or 1d")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


Duration = Annotated[float, BeforeValidator(duration_s)]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RetrySpec(_Entry):
    """How a channel retries a failed send before it dead-letters it."""

    tiers: tuple[Duration, ...] = Field(default=(5.0, 30.0, 300.0), min_length=1,
                                        max_length=MAX_RETRY_TIERS)
    base: Duration = 5.0
    cap: Duration = 300.0
    jitter: Literal["full", "equal", "decorrelated"] = "full"
    max_attempts: int = Field(default=8, ge=1, le=1000)
    max_age: Duration = 86400.0

    @model_validator(mode="after")
    def _ordered(self) -> RetrySpec:
        if list(self.tiers) != sorted(set(self.tiers)):
            raise ValueError("tiers must be distinct, in increasing order")
        if self.cap < self.base:
            raise ValueError("cap must be at least base")
        return self


class EndpointLimitSpec(_Entry):
    """Back-pressure per endpoint (a webhook URL, a gateway instance, the channel's one server):
    a request waits at most `wait` for room; then it is deferred to a retry tier, not attempted."""

    in_flight: int | None = Field(default=None, ge=1, le=10000)  # None: the channel's concurrency
    rate: float | None = Field(default=None, gt=0, le=1_000_000)  # requests per second; None: no limit
    wait: Duration = 1.0


class ChannelSpec(_Entry):
    """A way to reach people: its kind, where its provider is, how it scales and retries."""

    kind: ChannelKind
    # Kind-specific (checked in catalog_refs): whatsapp-gateway needs `instances` (base URLs),
    # email needs `url`, email-smtp `host` and `from`, webhook `secrets`. A secret is
    # `${VARIABLE}`, resolved from the environment when the file is read.
    connection: dict[str, str | tuple[str, ...]] = Field(default_factory=dict)
    partitions: int = Field(default=6, ge=1, le=1000)
    concurrency: int = Field(default=64, ge=1, le=10000)  # requests in flight per worker
    per_endpoint: EndpointLimitSpec = Field(default_factory=EndpointLimitSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)

    @field_validator("connection", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """`port: 587` as YAML writes it, kept as text like every other setting."""
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value


class Route(_Entry):
    """Where one notification goes on one channel: the recipient, a field of the event."""

    to: str


class NotificationSpec(_Entry):
    """What to send when an event of a triggering type happens."""

    # Event types, all of one kind. Not `on`: YAML 1.1 reads a bare `on` as true.
    trigger: tuple[str, ...] = Field(min_length=1)
    # Simple guards: field -> the value it must have, or a list of values it may have.
    when: dict[str, str | int | bool | tuple[str | int | bool, ...]] = Field(default_factory=dict)
    channels: dict[str, Route] = Field(min_length=1)
    template: str | None = Field(default=None, min_length=1, max_length=128)  # default: the name
    params: dict[str, str] = Field(default_factory=dict)  # template parameter -> event field
    sla: Duration | None = None  # must be delivered on every channel within this, or it is missing
    resends: int = Field(default=0, ge=0, le=10)  # requested again this often, one SLA apart

    @model_validator(mode="after")
    def _resends_need_sla(self) -> NotificationSpec:
        if self.resends and self.sla is None:
            raise ValueError("resends needs an sla: a notification is resent when it is missing")
        return self


class EventKindSpec(_Entry):
    """A kind of domain event: its Avro schema, key and accepted types."""

    schema_file: str = Field(alias="schema")  # path relative to the catalog file
    topic: str | None = None  # default: "<kind>.events"
    key: str  # the field whose value is the record key (the aggregate id)
    types: tuple[str, ...] = Field(min_length=1)  # "<kind>.<what>"
    type_field: str | None = None  # when set, a type's <what> must equal this field's value
    time_field: str = "occurred_at"  # when the event happened: a timestamp field
    workspace_field: str | None = None  # the tenant whose gateway session sends
    partitions: int = Field(default=6, ge=1, le=1000)
    # Files of the schema's earlier versions, oldest first: provisioning registers them before
    # the current one, so data written with them keeps a schema id the registry resolves.
    earlier_schemas: tuple[str, ...] = ()


class Catalog(_Entry):
    """A whole catalog file, parsed. `source` is where it was read from (for messages)."""

    name: str
    events: dict[str, EventKindSpec] = Field(min_length=1)
    notifications: dict[str, NotificationSpec] = Field(min_length=1)
    channels: dict[str, ChannelSpec] = Field(min_length=1)
    source: str = ""
    # The folder of the notifications' templates, relative to the catalog file.
    templates: str = "templates"
    # Set by the loader: `templates`, resolved against the catalog file's folder.
    template_dir: str = Field(default="", exclude=True, repr=False)
    # Each event kind's Avro schema (JSON), read by the loader from its `schema` file.
    event_schemas: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True, repr=False)
    # And the schemas of their `earlier_schemas`, by kind, oldest first.
    earlier_event_schemas: dict[str, list[dict[str, Any]]] = Field(default_factory=dict, exclude=True,
                                                                   repr=False)

    def event_kind_of(self, event_type: str) -> str:
        return event_type.split(".", 1)[0]

    def topic_of(self, kind: str) -> str:
        return self.events[kind].topic or f"{kind}.events"

    def notifications_on(self, event_type: str) -> list[tuple[str, NotificationSpec]]:
        """The notifications an event of this type may trigger, in declaration order."""
        return [(name, spec) for name, spec in self.notifications.items() if event_type in spec.trigger]

    def channels_of_kind(self, kind: str) -> tuple[str, ...]:
        return tuple(name for name, spec in self.channels.items() if spec.kind == kind)
