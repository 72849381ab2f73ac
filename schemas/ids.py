"""Deterministic identifiers: the same inputs always give the same id, on every process."""

from __future__ import annotations

import uuid

# Fixed namespace: changing it would change every notification id and defeat provider dedupe.
_NOTIFICATION_NAMESPACE = uuid.UUID("6f1d0b7e-3c55-4c1e-9a57-1f3f6d1b8a42")


def notification_id(subject_id: str, notification_type: str, channel: str) -> str:
    """One id per (subject, notification, channel); sent to providers as Idempotency-Key."""
    return str(uuid.uuid5(_NOTIFICATION_NAMESPACE, f"{subject_id}|{notification_type}|{channel}"))


def derived_event_id(source_event_id: str, output_key: str) -> str:
    """event-id of a record derived from another, stable across reprocessing of the source."""
    return str(uuid.uuid5(_NOTIFICATION_NAMESPACE, f"derived|{source_event_id}|{output_key}"))
