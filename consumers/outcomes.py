"""The records a delivery produces for each outcome: a status always, a dead letter on failure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from herald.schemas.catalog import NOTIFICATION_STATUS
from herald.schemas.codec import encode
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, SourceRecord, dead_letter, derived_headers


def status_record(
    source: SourceRecord, request: dict[str, Any], *, status: str, attempts: int,
    message_id: str | None = None, error: str | None = None,
) -> OutgoingRecord:
    """The NotificationStatus of one notification, keyed by its id (compacted topic)."""
    record = {
        "notification_id": request["notification_id"],
        "registration_id": request["registration_id"],
        "notification_type": request["notification_type"],
        "channel": request["channel"],
        "status": status,
        "attempts": attempts,
        "provider_message_id": message_id,
        "error": error,
        "source_occurred_at": request["source_occurred_at"],
        "occurred_at": datetime.now(UTC),
    }
    event_id = derived_event_id(request["notification_id"], f"status|{status}|{attempts}")
    headers = derived_headers(source.headers, event_id, f"notification.{status}")
    return OutgoingRecord(NOTIFICATION_STATUS, request["notification_id"].encode(),
                          encode("herald.NotificationStatus", record), headers)


def failed_records(
    source: SourceRecord, request: dict[str, Any], *, attempts: int, error_class: str, error: str,
) -> list[OutgoingRecord]:
    """A failed delivery is never silent: a `failed` status and the request in the DLQ."""
    return [status_record(source, request, status="failed", attempts=attempts, error=error),
            dead_letter(source, error_class, error)]
