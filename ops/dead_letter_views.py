"""Dead letters as ops see them, shared by the CLI, the API and the console: a masked summary
for lists, the whole record for one message's detail, and the audit log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.masking import mask_text
from herald.schemas.headers import iso
from herald.schemas.tables import DeadLetter, DeadLetterAction


def _when(value: Any) -> str | None:
    return None if value is None else iso(value)


def jsonable_record(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded Avro record as JSON (timestamps ISO 8601)."""
    from herald.consumers.dead_letter_index import jsonable

    return jsonable(record)  # type: ignore[no-any-return]


def summary(row: DeadLetter) -> dict[str, Any]:
    """A list row: phone numbers and email addresses masked."""
    return {
        "id": row.id, "original_topic": row.original_topic, "key": row.key_text,
        "event_type": row.event_type, "error_class": row.error_class,
        "error_message": mask_text(row.error_message), "attempts": row.attempts,
        "replay_count": row.replay_count, "state": row.state, "last_failed_at": _when(row.last_failed_at),
        "first_failed_at": _when(row.first_failed_at), "trace_id": row.trace_id,
    }


def detail(row: DeadLetter) -> dict[str, Any]:
    """One dead letter whole: where it sits, why it failed, headers and decoded payload."""
    return {
        **summary(row),
        "error_message": row.error_message,
        "dlq": {"topic": row.dlq_topic, "partition": row.dlq_partition, "offset": row.dlq_offset},
        "original": {"topic": row.original_topic, "partition": row.original_partition,
                     "offset": row.original_offset},
        "consumer_group": row.consumer_group, "headers": row.headers, "schema": row.schema_name,
        "payload": row.payload_json,
        # Undecodable bytes as they came (the first 4 KiB), to see what the poison was.
        "payload_hex": (None if row.payload_json is not None or row.payload is None
                        else row.payload[:4096].hex()),
        "indexed_at": _when(row.indexed_at), "resolved_at": _when(row.resolved_at),
        "resolved_by": row.resolved_by, "resolved_action_id": row.resolved_action_id,
        "replayed_to": row.replayed_to,
    }


def audit_entry(entry: DeadLetterAction) -> dict[str, Any]:
    return {"id": entry.id, "action": entry.action, "actor": entry.actor, "target": entry.target,
            "selection": entry.selection, "row_count": entry.row_count, "row_ids": entry.row_ids,
            "started_at": _when(entry.started_at), "finished_at": _when(entry.finished_at)}


def audit_entries(session: Session, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
    """Newest first; an entry with no finished_at was interrupted (its rows are exact)."""
    entries = session.scalars(sa.select(DeadLetterAction).order_by(DeadLetterAction.id.desc())
                              .limit(limit).offset(offset))
    return [audit_entry(entry) for entry in entries]
