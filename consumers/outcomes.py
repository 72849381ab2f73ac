"""The NotificationStatus record of each outcome: sent, retry scheduled, dead-lettered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from herald.infra import tracing
from herald.schemas import headers as h
from herald.schemas.catalog import NOTIFICATION_STATUS
from herald.schemas.codec import encode
from herald.schemas.ids import derived_event_id
from herald.schemas.records import OutgoingRecord, SourceRecord, derived_headers


def status_record(
    source: SourceRecord, request: dict[str, Any], *, status: str, attempts: int,
    message_id: str | None = None, error: str | None = None, error_class: str | None = None,
    due_at: datetime | None = None, instance: str | None = None,
) -> OutgoingRecord:
    """The NotificationStatus of one notification, keyed by its id (compacted topic)."""
    record = {
        "notification_id": request["notification_id"],
        "subject_id": request["subject_id"],
        "notification_type": request["notification_type"],
        "channel": request["channel"],
        "status": status,
        "attempts": attempts,
        "provider_message_id": message_id,
        "error": error,
        "error_class": error_class,
        "due_at": due_at,
        "gateway_instance": instance,
        "source_occurred_at": request["source_occurred_at"],
        "occurred_at": datetime.now(UTC),
    }
    # Stable across reprocessing: the same attempt's outcome always has the same event-id.
    event_id = derived_event_id(request["notification_id"], f"status|{status}|{attempts}")
    # While tracing, the source's traceparent names the attempt that had this outcome.
    traced = source.headers.get(h.TRACEPARENT) if tracing.enabled() else None
    headers = derived_headers(source.headers, event_id, f"notification.{status}", traceparent=traced)
    return OutgoingRecord(NOTIFICATION_STATUS, request["notification_id"].encode(),
                          encode("herald.NotificationStatus", record), headers)
