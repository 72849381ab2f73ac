"""Which domain event becomes which notification, on which channels. One table, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herald.schemas.ids import notification_id


@dataclass(frozen=True)
class RoutingRule:
    status: str  # registration status that triggers the notification
    notification_type: str
    channels: tuple[str, ...]


ROUTING_RULES: tuple[RoutingRule, ...] = (
    # The seeds' three notifications. A welcome can wait for the inbox; the upload is
    # acknowledged where the participant just sent the proof from; the e-ticket, the one that
    # must arrive, goes both ways.
    RoutingRule("created", "welcome", ("email",)),
    RoutingRule("payment_uploaded", "upload_confirmation", ("whatsapp",)),
    RoutingRule("payment_verified", "e_ticket", ("whatsapp", "email")),
)

_RECIPIENT_FIELD = {"whatsapp": "phone", "email": "email"}


def notification_requests(event: dict[str, Any]) -> list[dict[str, Any]]:
    """NotificationRequest records for one RegistrationEvent (none when no rule matches)."""
    requests = []
    for rule in ROUTING_RULES:
        if rule.status != event["status"]:
            continue
        for channel in rule.channels:
            requests.append({
                "notification_id": notification_id(event["registration_id"],
                                                   rule.notification_type, channel),
                "registration_id": event["registration_id"],
                "notification_type": rule.notification_type,
                "channel": channel,
                "recipient": event[_RECIPIENT_FIELD[channel]],
                "participant_name": event["participant_name"],
                "source_event_id": event["event_id"],
                "source_occurred_at": event["occurred_at"],
                "workspace_id": event["workspace_id"],
            })
    return requests
