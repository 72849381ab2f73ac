"""Which event becomes which notification, on which channels: the catalog's rules, applied.

Pure: an event (its kind, type and record) in, the NotificationRequest records it calls
for out, in the catalog's order.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from herald.schemas import headers as h
from herald.schemas.catalog_model import Catalog, EventKindSpec, NotificationSpec
from herald.schemas.ids import notification_id


def event_type_of(catalog: Catalog, kind: str, record: Mapping[str, Any],
                  headers: Mapping[str, str]) -> str | None:
    """The event's declared type: its event-type header, else its type field's value; None
    when neither names a type of its kind."""
    spec = catalog.events[kind]
    if headers.get(h.EVENT_TYPE) in spec.types:
        return headers[h.EVENT_TYPE]
    if spec.type_field is not None:
        candidate = f"{kind}.{record.get(spec.type_field)}"
        if candidate in spec.types:
            return candidate
    return None


class EventLacksField(KeyError):
    """An event (one kept from before a catalog change) lacks a field the catalog now reads."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def notification_requests(catalog: Catalog, kind: str, event_type: str,
                          event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """NotificationRequest records for one event (none when no notification is called for);
    EventLacksField names a field the catalog reads that the event does not have."""
    spec = catalog.events[kind]
    try:
        return _requests(catalog, spec, event_type, event)
    except KeyError as exc:  # only the event is indexed in there
        raise EventLacksField(str(exc.args[0])) from None


def _requests(catalog: Catalog, spec: EventKindSpec, event_type: str,
              event: Mapping[str, Any]) -> list[dict[str, Any]]:
    subject = str(event[spec.key])
    workspace = str(event[spec.workspace_field]) if spec.workspace_field else "default"
    requests = []
    for name, notification in catalog.notifications_on(event_type):
        if not guards_pass(notification, event):
            continue
        params = template_params(notification, event)
        for channel, route in notification.channels.items():
            requests.append({
                "notification_id": notification_id(subject, name, channel),
                "subject_id": subject,
                "notification_type": name,
                "channel": channel,
                "recipient": str(event[route.to]),
                "template": notification.template or name,
                "params": params,
                "source_event_id": str(event["event_id"]),
                "source_occurred_at": event[spec.time_field],
                "workspace_id": workspace,
                "event_type": event_type,
            })
    return requests


def fields_read(catalog: Catalog, kind: str, event_type: str) -> frozenset[str]:
    """The event's fields that `notification_requests` reads for this type: all a resend needs."""
    spec = catalog.events[kind]
    identifying = filter(None, (spec.workspace_field, spec.type_field))
    return frozenset({"event_id", spec.key, spec.time_field, *identifying,
                      *notification_fields(catalog, event_type)})


def notification_fields(catalog: Catalog, event_type: str) -> set[str]:
    """The event's fields the notifications on this type read: guards, parameters, recipients."""
    read: set[str] = set()
    for _name, notification in catalog.notifications_on(event_type):
        read.update(notification.when)
        read.update(notification.params.values())
        read.update(route.to for route in notification.channels.values())
    return read


def guards_pass(notification: NotificationSpec, event: Mapping[str, Any]) -> bool:
    """Whether the event has, in every guarded field, the value (or one of the values) asked."""
    for field, wanted in notification.when.items():
        allowed = wanted if isinstance(wanted, tuple) else (wanted,)
        if event.get(field) not in allowed:
            return False
    return True


def template_params(notification: NotificationSpec, event: Mapping[str, Any]) -> dict[str, str]:
    """The template's parameters as text; a null field is left out."""
    return {param: _text(event[field]) for param, field in notification.params.items()
            if event.get(field) is not None}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return h.iso(value)
    return str(value)
