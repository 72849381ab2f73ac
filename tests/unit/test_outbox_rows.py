"""The outbox's public writers, as a replay uses them: bytes and headers kept, the event id kept
when valid, a fresh one when not."""

from __future__ import annotations

import uuid
from typing import Any

from herald.producers.outbox import OUTBOX_SHARDS, emit_encoded, shard_of
from herald.schemas import headers as h
from herald.schemas.tables import OutboxRecord


class AddedRows:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def add(self, row: Any) -> None:
        self.rows.append(row)


def test_an_encoded_record_is_written_as_it_was_with_its_event_id() -> None:
    session, event_id, payload = AddedRows(), str(uuid.uuid4()), b"\x00\x00\x00\x00\x01raw"
    headers = {h.EVENT_ID: event_id, h.EVENT_TYPE: "notification.requested", "x-extra": "kept"}
    row = emit_encoded(session, "notifications.whatsapp", "reg-7", payload, headers)  # type: ignore[arg-type]
    assert session.rows == [row] and isinstance(row, OutboxRecord)
    assert (row.topic, row.message_key, row.payload) == ("notifications.whatsapp", "reg-7", payload)
    assert row.headers == headers and row.event_id == uuid.UUID(event_id)
    assert row.event_type == "notification.requested"
    assert row.shard == shard_of("reg-7") and 0 <= row.shard < OUTBOX_SHARDS


def test_a_record_without_a_valid_event_id_gets_a_new_one_and_a_replay_type() -> None:
    session = AddedRows()
    row = emit_encoded(session, "t", "k", b"p", {h.EVENT_ID: "not-a-uuid"})  # type: ignore[arg-type]
    assert isinstance(row.event_id, uuid.UUID) and row.event_type == "dead_letter.replayed"
