"""An event record as JSON and back: kept in stream state and in notifications.missing.

Timestamps travel as epoch milliseconds; reading back, the fields the schema declares as
timestamps become datetimes again, so the record encodes and routes as it first did.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any


def event_to_json(record: Mapping[str, Any], only: Collection[str] | None = None) -> dict[str, Any]:
    """The record as JSON; with `only`, just those of its fields."""
    return {name: _json_value(value) for name, value in record.items() if only is None or name in only}


def event_from_json(data: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    timestamps = {f["name"] for f in schema["fields"] if is_timestamp(f["type"])}
    return {name: (datetime.fromtimestamp(value / 1000, UTC) if name in timestamps and isinstance(value, int)
                   else value) for name, value in data.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return value


def is_timestamp(avro_type: Any) -> bool:
    """Whether a field's Avro type is a timestamp (or a union with one)."""
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    return any(isinstance(b, dict) and str(b.get("logicalType", "")).startswith("timestamp")
               for b in branches)
