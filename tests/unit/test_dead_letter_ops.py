"""The pure parts of DLQ ops: what an index row says, what a replay sends, what lists mask."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald.consumers.dead_letter_index import index_row
from herald.infra.masking import mask_text, mask_value
from herald.ops.dead_letter_ops import (
    DeadLetterFilter,
    DeadLetterOpsError,
    replay_headers,
    replay_topic,
)
from herald.schemas import headers as h

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
DEAD = {h.EVENT_ID: "e-1", h.CORRELATION_ID: "c-1", "x-upstream": "kept", h.ERROR_CLASS: "ProviderRejected",
        h.ERROR_MESSAGE: "HTTP 400", h.ATTEMPTS: "3", h.ATTEMPT: "3",
        h.FIRST_FAILED_AT: "2026-11-22T00:00:00Z",
        h.ORIGINAL_TOPIC: "notifications.whatsapp", h.ORIGINAL_PARTITION: "2", h.ORIGINAL_OFFSET: "41",
        h.CONSUMER_GROUP: "g", h.REPLAY_COUNT: "1", h.TRACE_ID: "t", h.RETRY_DELAY_MS: "500"}


def test_a_replay_to_the_original_topic_starts_afresh_with_the_records_own_headers():
    sent = replay_headers(DEAD, "original", NOW)
    assert sent == {h.EVENT_ID: "e-1", h.CORRELATION_ID: "c-1", "x-upstream": "kept", h.REPLAY_COUNT: "2"}


def test_a_replay_to_the_retry_tier_is_due_now_and_still_names_where_it_first_arrived():
    sent = replay_headers(DEAD, "retry", NOW)
    assert sent[h.DUE_AT] == h.iso(NOW) and sent[h.REPLAY_COUNT] == "2"
    assert (sent[h.ORIGINAL_TOPIC], sent[h.ORIGINAL_OFFSET]) == ("notifications.whatsapp", "41")
    assert not {h.ATTEMPT, h.ATTEMPTS, h.FIRST_FAILED_AT, h.ERROR_CLASS} & set(sent)


def test_replay_targets():
    assert replay_topic("notifications.email", "retry") == "notifications.email.retry.1"
    assert replay_topic("registrations.events", "original") == "registrations.events"
    with pytest.raises(DeadLetterOpsError, match=r"registrations\.events has no retry tiers"):
        replay_topic("registrations.events", "retry")
    with pytest.raises(DeadLetterOpsError, match="unknown replay target 'later'"):
        replay_topic("notifications.email", "later")


def test_an_unknown_state_is_named():
    with pytest.raises(DeadLetterOpsError, match="unknown state 'dead'; known: open, replayed, discarded"):
        DeadLetterFilter(state="dead")


def test_the_audit_log_records_only_what_was_asked():
    asked = DeadLetterFilter(topic="whatsapp", since=NOW)
    assert asked.as_dict() == {"topic": "whatsapp", "since": h.iso(NOW), "state": "open"}
    assert DeadLetterFilter(ids=(3, 4)).as_dict() == {"ids": [3, 4], "state": "open"}


def test_an_index_row_reads_why_from_the_headers_and_survives_missing_ones():
    row = index_row("notifications.whatsapp.dlq", 0, 9, b"n-1", b"poison", DEAD, int(NOW.timestamp() * 1000))
    assert (row["original_topic"], row["original_offset"], row["attempts"], row["replay_count"]) == (
        "notifications.whatsapp", 41, 3, 1)
    assert row["last_failed_at"] == NOW
    assert (row["schema_name"], row["payload_json"]) == (None, None), "poison is kept as bytes only"
    bare = index_row("sessions.events.dlq", 0, 1, None, None, {}, None)
    assert (bare["original_topic"], bare["error_class"], bare["attempts"], bare["key_text"]) == (
        "sessions.events", "Unknown", 0, None)


@pytest.mark.parametrize(("text", "masked"), [
    ("+6281234567890", "+••••••••••890"),
    ("to 0812-3456-7890 now", "to •••••••••890 now"),
    ("budi.s@example.co.id", "b•••@example.co.id"),
    ("offset 1763866800000 of REG-00012", "offset 1763866800000 of REG-00012"),
])
def test_phone_numbers_and_emails_are_masked_and_nothing_else(text, masked):
    assert mask_text(text) == masked


def test_masking_reaches_into_payloads():
    assert mask_value({"recipient": "a@b.id", "n": 3, "list": ["+6281200000001"]}) == {
        "recipient": "a•••@b.id", "n": 3, "list": ["+••••••••••001"]}


@pytest.mark.parametrize("bad", [{"key": "a\x00b"}, {"text": "\udab9"}, {"ids": (2**63,)}, {"ids": (0,)}])
def test_a_filter_no_row_could_match_is_refused_before_the_database(bad):
    with pytest.raises(DeadLetterOpsError):
        DeadLetterFilter(**bad)


def test_since_is_taken_in_any_offset_and_kept_in_utc():
    from datetime import timedelta, timezone

    far = datetime(270, 12, 30, 2, 16, tzinfo=timezone(-timedelta(hours=21, minutes=20)))
    assert DeadLetterFilter(since=far).since == far.astimezone(UTC)
