"""What the history indexer makes of each record, and how a notification's story is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from herald.consumers.history_index import HistoryIndexConfig, HistoryIndexer, history_row, history_topics
from herald.ops.notification_history import StoryQuery, story
from herald.schemas import headers as h
from herald.schemas.codec import encode
from herald.schemas.tables import NotificationHistoryEntry

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
REQUEST = {"notification_id": "n-1", "subject_id": "ORDER-1", "notification_type": "receipt",
           "channel": "email", "recipient": "ani@example.test", "template": "receipt",
           "params": {"name": "Ani", "user_id": "42"}, "source_event_id": "e-1", "source_occurred_at": NOW,
           "workspace_id": "default", "event_type": "order.paid"}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def status(kind: str, attempts: int, at: datetime, **fields: object) -> bytes:
    record = {"notification_id": "n-1", "subject_id": "ORDER-1", "notification_type": "receipt",
              "channel": "email", "status": kind, "attempts": attempts, "provider_message_id": None,
              "error": None, "error_class": None, "due_at": None, "gateway_instance": None,
              "source_occurred_at": NOW, "occurred_at": at, **fields}
    return encode("herald.NotificationStatus", record)


def test_a_request_is_requested_or_replayed_with_its_recipient_and_fields() -> None:
    value = encode("herald.NotificationRequest", REQUEST)
    row = history_row("notifications.email", 3, 17, value, {h.TRACEPARENT: TRACEPARENT}, 1_763_805_600_000)
    assert row is not None
    assert (row["kind"], row["recipient"]) == ("requested", "ani@example.test")
    assert row["event_type"] == "order.paid"
    assert row["event_fields"] == {"name": "Ani", "user_id": "42"}
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "notifications.email", 3, 17)
    assert row["occurred_at"] == datetime.fromtimestamp(1_763_805_600, UTC)
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    replayed = history_row("notifications.email", 3, 90, value, {h.REPLAY_COUNT: "1"}, 1_763_805_600_000)
    assert replayed is not None and replayed["kind"] == "replayed"


def test_an_outcome_keeps_its_attempt_error_and_due_time() -> None:
    due = NOW + timedelta(seconds=30)
    row = history_row("notifications.status", 0, 5, status("retry_scheduled", 1, NOW, error="HTTP 503",
                                                           error_class="ProviderUnavailable", due_at=due),
                      {}, None)
    assert row is not None
    assert {k: row[k] for k in ("kind", "attempts", "error_class", "error", "due_at", "occurred_at")} == {
        "kind": "retry_scheduled", "attempts": 1, "error_class": "ProviderUnavailable", "error": "HTTP 503",
        "due_at": due, "occurred_at": NOW}
    assert row["recipient"] is None and row["event_fields"] is None


def test_a_record_that_tells_nothing_gives_no_row() -> None:
    assert history_row("notifications.email", 0, 1, b"not avro", {}, None) is None
    assert history_row("notifications.email", 0, 1, None, {}, None) is None


def test_the_indexer_reads_the_status_topic_and_each_channels_requests() -> None:
    assert history_topics(("email",)) == ("notifications.status", "notifications.email",
                                          "notifications.email.retry.1", "notifications.email.retry.2",
                                          "notifications.email.retry.3")


def test_a_retry_tier_tells_only_an_operators_replay() -> None:
    value = encode("herald.NotificationRequest", REQUEST)
    assert history_row("notifications.email.retry.1", 0, 3, value, {}, None) is None  # a retry
    replayed = history_row("notifications.email.retry.1", 0, 4, value, {h.REPLAY_COUNT: "2"}, None)
    assert replayed is not None and replayed["kind"] == "replayed"


def entry(kind: str, at: datetime, **fields: object) -> NotificationHistoryEntry:
    base = {"notification_id": "n-1", "subject_id": "ORDER-1", "notification_type": "receipt",
            "channel": "email", "recipient": None, "attempts": None, "error_class": None, "error": None,
            "provider_message_id": None, "gateway_instance": None, "due_at": None, "trace_id": None}
    return NotificationHistoryEntry(**{**base, **fields, "kind": kind, "occurred_at": at})


def test_a_story_runs_from_the_request_to_its_latest_outcome_and_masks_for_viewers() -> None:
    moments = [entry("requested", NOW, recipient="ani@example.test"),
               entry("retry_scheduled", NOW + timedelta(seconds=1), attempts=1,
                     error_class="ProviderUnavailable", error="550 refused for ani@example.test",
                     due_at=NOW + timedelta(seconds=31)),
               entry("sent", NOW + timedelta(seconds=32), attempts=2, provider_message_id="m-9")]
    told = story(moments, mask=False)
    assert (told["status"], told["recipient"], told["last_at"]) == (
        "sent", "ani@example.test", "2026-11-22T10:00:32.000+00:00")
    assert [m["kind"] for m in told["timeline"]] == ["requested", "retry_scheduled", "sent"]
    assert told["timeline"][1]["due_at"] == "2026-11-22T10:00:31.000+00:00"
    assert told["timeline"][2]["provider_message_id"] == "m-9"
    masked = story(moments, mask=True)
    assert masked["recipient"] == "a•••@example.test"
    assert "ani@" not in masked["timeline"][1]["error"]
    assert story(moments[:1], mask=False)["status"] == "requested"
    again = story([*moments, entry("requested", NOW + timedelta(minutes=5))], mask=False)
    assert [m["kind"] for m in again["timeline"]] == ["requested", "retry_scheduled", "sent", "resent"]


def test_a_query_names_what_is_missing_or_wrong() -> None:
    assert StoryQuery().problems() == [
        "give a key (an event key or a notification id), a recipient or an event field"]
    assert StoryQuery(key="ORDER-1", status="lost").problems() == [
        "status must be one of requested, replayed, sent, retry_scheduled, dead_lettered, failed"]
    assert StoryQuery(recipient="ani@example.test").problems() == []


class FlakyEngine:
    """Refuses `failures` connections as a restarting PostgreSQL does, then inserts every row."""

    def __init__(self, failures: int) -> None:
        self.failures, self.inserted = failures, 0

    def begin(self) -> FlakyEngine:
        if self.failures:
            self.failures -= 1
            raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("restarting"))
        return self

    def __enter__(self) -> FlakyEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def execute(self, _statement: object, rows: list) -> FlakyEngine:
        self.inserted, self._ids = self.inserted + len(rows), list(range(len(rows)))
        return self

    def all(self) -> list:
        return self._ids


class Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return "notifications.email"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return encode("herald.NotificationRequest", REQUEST)

    def headers(self) -> list:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_763_805_600_000)


def test_a_database_away_keeps_the_batch_until_it_answers() -> None:
    engine = FlakyEngine(failures=3)
    config = HistoryIndexConfig("", ("notifications.email",), retention_days=7)
    indexer = HistoryIndexer(config, consumer=None, engine=engine)  # type: ignore[arg-type]
    indexer._stop.wait = lambda _s: False  # type: ignore[method-assign]  # no real pause
    indexer._index([Message(1), Message(2)])  # type: ignore[list-item]
    assert (engine.failures, engine.inserted, indexer.stats.indexed) == (0, 2, 2)
