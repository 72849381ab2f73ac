"""The missing-notification detector's rules, without Faust: one alert per overdue notification,
none for one delivered in time, a tombstone for a late one, whatever order inputs arrive in."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from herald.schemas import headers as h
from herald.schemas.catalog import MISSING_NOTIFICATIONS
from herald.schemas.codec import decode
from herald.schemas.ids import notification_id
from herald.streams.missing import FORGET_AFTER_MS, Expectation, Policy, check, delivered, expect, needs_check
from herald.streams.missing_agents import DeadlineIndex
from tests.catalogs import example, written_catalog

OCCURRED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T0 = int(OCCURRED.timestamp() * 1000)
SLA_MS = 300_000  # the registrations example's e-ticket SLA
POLICY = Policy(example())
KEY = "REG-7|e_ticket"


def verified(event_id="7d3c1c1e-0f7e-4c55-8f0a-1c2b3d4e5f60"):
    return {"event_id": event_id, "registration_id": "REG-7", "status": "payment_verified",
            "participant_name": "Budi", "phone": "+628111", "email": "budi@example.test",
            "occurred_at": OCCURRED, "workspace_id": "ws-9"}


def sent(channel, status="sent"):
    return {"subject_id": "REG-7", "notification_type": "e_ticket", "channel": channel,
            "status": status}


def expected(state=None, policy=POLICY, event=None):
    return expect({KEY: state} if state else {}, "registration", "registration.payment_verified",
                  event or verified(), T0 + 5, policy)[KEY]


def resending(tmp_path, times):
    _path, catalog = written_catalog(tmp_path, lambda d: d["notifications"]["e_ticket"].update(resends=times))
    return Policy(catalog)


def test_a_verified_payment_expects_an_e_ticket_on_both_channels_by_its_sla():
    state = expected()
    assert state.channels == ("whatsapp", "email") and state.delivered == ()
    assert (state.expected_since_ms, state.deadline_ms) == (T0, T0 + SLA_MS)
    assert not needs_check(state, T0 + SLA_MS - 1) and needs_check(state, T0 + SLA_MS)
    assert check(state, T0 + SLA_MS - 1, POLICY) == (state, []), "never before the deadline"


def test_an_overdue_notification_alerts_exactly_once():
    state, records = check(expected(), T0 + SLA_MS + 10, POLICY)
    assert len(records) == 1
    alert = records[0]
    assert (alert.topic, alert.key) == (MISSING_NOTIFICATIONS, KEY.encode())
    body = decode(alert.value).record
    assert body["missing_channels"] == ["whatsapp", "email"] and body["delivered_channels"] == []
    assert body["deadline"] == OCCURRED + timedelta(milliseconds=SLA_MS)
    assert body["workspace_id"] == "ws-9" and body["resend_attempts"] == 0
    assert body["source_event_type"] == "registration.payment_verified"
    assert json.loads(body["source_event"])["registration_id"] == "REG-7", "kept, to resend from"
    assert not needs_check(state, T0 + 10 * SLA_MS)
    assert check(state, T0 + 10 * SLA_MS, POLICY) == (state, []), "a second scan finds it handled"


def test_delivered_on_every_channel_in_time_never_alerts_and_is_forgotten_after_retention():
    state, records = delivered(expected(), sent("whatsapp"), T0 + 100)
    assert records == [] and state.delivered == ("whatsapp",)
    state, records = delivered(state, sent("email"), T0 + 200)
    assert records == [] and state.complete
    assert check(state, T0 + 10 * SLA_MS, POLICY) == (state, [])
    assert expected(state) == state, "the status change read again (a restart) expects nothing anew"
    assert check(state, T0 + 200 + FORGET_AFTER_MS, POLICY) == (None, [])


def test_a_late_delivery_updates_the_alert_then_resolves_it_with_a_tombstone():
    state, _alert = check(expected(), T0 + SLA_MS, POLICY)
    state, records = delivered(state, sent("email"), T0 + SLA_MS + 50)
    assert decode(records[0].value).record["missing_channels"] == ["whatsapp"]
    state, records = delivered(state, sent("whatsapp"), T0 + SLA_MS + 90)
    assert state.complete and not needs_check(state, T0 + 100 * SLA_MS)
    assert [(r.topic, r.key, r.value) for r in records] == [(MISSING_NOTIFICATIONS, KEY.encode(), None)]


def test_deliveries_seen_before_their_status_change_count():
    early, _ = delivered(None, sent("whatsapp"), T0 - 50)
    state = expected(early)
    assert state.delivered == ("whatsapp",) and state.deadline_ms == T0 + SLA_MS
    _, records = check(state, T0 + SLA_MS, POLICY)
    assert decode(records[0].value).record["missing_channels"] == ["email"]
    both, _ = delivered(early, sent("email"), T0 - 40)
    settled = expected(both)
    assert settled.complete and check(settled, T0 + 10 * SLA_MS, POLICY) == (settled, []), "no alert"


def test_a_replayed_status_change_keeps_the_first_deadline():
    state = expected()
    later = {**verified("another-event"), "occurred_at": OCCURRED + timedelta(hours=1)}
    assert expected(state, event=later) == state


def test_only_sent_counts_as_delivered():
    state = expected()
    for status in ("dead_lettered", "retry_scheduled"):
        assert delivered(state, sent("email", status), T0 + 1) == (state, [])
    again, _ = delivered(state, sent("email"), T0 + 1)
    assert delivered(again, sent("email"), T0 + 2) == (again, []), "a repeated sent changes nothing"


def test_resends_are_bounded_spaced_by_the_sla_and_reuse_the_notification_ids(tmp_path):
    policy = resending(tmp_path, 2)
    state, _ = delivered(expected(policy=policy), sent("email"), T0 + 1)
    state, records = check(state, T0 + SLA_MS, policy)
    alert, resend = records
    assert decode(alert.value).record["resend_attempts"] == 1
    assert resend.topic == "notifications.whatsapp", "only the channel still missing"
    request = decode(resend.value).record
    assert request["notification_id"] == notification_id("REG-7", "e_ticket", "whatsapp")
    assert resend.key == request["notification_id"].encode() and request["recipient"] == "+628111"
    assert (request["template"], request["params"]) == ("e_ticket", {"name": "Budi"})
    assert request["source_occurred_at"] == OCCURRED, "from the event kept, its time as it was"
    assert not needs_check(state, T0 + 2 * SLA_MS - 1)
    state, records = check(state, T0 + 2 * SLA_MS, policy)
    assert [r.topic for r in records] == [MISSING_NOTIFICATIONS, "notifications.whatsapp"]
    assert state.resend_attempts == 2 and not needs_check(state, T0 + 100 * SLA_MS), "no third resend"


def test_an_orphan_delivery_is_forgotten_after_its_time_to_live():
    orphan, _ = delivered(None, sent("email"), T0)
    assert not needs_check(orphan, T0 + FORGET_AFTER_MS - 1)
    assert check(orphan, T0 + FORGET_AFTER_MS, POLICY) == (None, [])


def test_reprocessing_a_check_gives_the_same_event_id():
    state = expected()
    first = check(state, T0 + SLA_MS, POLICY)[1][0]
    again = check(state, T0 + SLA_MS + 5, POLICY)[1][0]
    assert first.headers[h.EVENT_ID] == again.headers[h.EVENT_ID]
    assert first.headers[h.EVENT_TYPE] == "notification.e_ticket.missing"


def test_state_survives_a_json_round_trip():
    state, _ = delivered(expected(), sent("email"), T0 + 1)
    assert Expectation.from_json(json.loads(json.dumps(state.as_json()))) == state


def test_the_deadline_index_yields_each_due_key_once_and_only_when_due():
    index = DeadlineIndex()
    state = expected()
    index.note(KEY, state)
    index.note(KEY, state)  # written twice: still one key to look at
    index.note("REG-8|e_ticket", replace(state, subject_id="REG-8", deadline_ms=T0 + 2 * SLA_MS))
    index.note("REG-9|e_ticket", None)  # forgotten: nothing to look at
    assert index.pop_due(T0 + SLA_MS - 1) == []
    assert index.pop_due(T0 + SLA_MS) == [KEY]
    assert index.pop_due(T0 + 3 * SLA_MS) == ["REG-8|e_ticket"]
    assert index.pop_due(T0 + 100 * SLA_MS) == []


def test_the_deadline_index_is_rebuilt_from_the_states():
    index = DeadlineIndex()
    alerted, _ = check(expected(), T0 + SLA_MS, POLICY)
    index.rebuild({KEY: expected(), "REG-7|welcome": alerted})
    assert index.pop_due(T0 + SLA_MS) == [KEY], "an alerted entry without resends waits for no time"


def test_only_notifications_with_an_sla_are_expected(tmp_path):
    _path, catalog = written_catalog(tmp_path, lambda d: d["notifications"]["welcome"].update(sla=None))
    created = {**verified(), "status": "created"}
    assert expect({}, "registration", "registration.created", created, T0, Policy(catalog)) == {}
    assert set(expect({}, "registration", "registration.created", created, T0, POLICY)) == {"REG-7|welcome"}


def test_an_entry_written_before_catalogs_still_loads_and_only_alerts():
    legacy = {"registration_id": "REG-7", "notification_type": "e_ticket", "channels": ["email"],
              "delivered": [], "expected_since_ms": T0, "deadline_ms": T0 + SLA_MS, "first_seen_ms": T0,
              "completed_at_ms": None, "alerted_at_ms": None, "resend_attempts": 0, "next_resend_ms": None,
              "event": {"event_id": "e", "registration_id": "REG-7", "occurred_at_ms": T0}}
    state = Expectation.from_json(legacy)
    assert (state.subject_id, state.key) == ("REG-7", KEY)
    _state, records = check(state, T0 + SLA_MS, POLICY)
    assert [r.topic for r in records] == [MISSING_NOTIFICATIONS]


def test_an_expectation_keeps_only_the_fields_a_resend_reads(tmp_path):
    _path, catalog = written_catalog(tmp_path, lambda d: d["notifications"]["e_ticket"].update(params={}))
    policy = Policy(catalog)
    state = expected(policy=policy, event={**verified(), "unread": "kept nowhere"})
    assert set(state.event) == set(verified()) - {"participant_name"}, "no name, no stray field"
    _state, records = check(state, T0 + SLA_MS, policy)
    assert "participant_name" not in decode(records[0].value).record["source_event"]


def test_a_kept_event_lacking_a_field_the_catalog_now_reads_alerts_without_resending(tmp_path, caplog):
    kept = expected()
    state = replace(kept, event={k: v for k, v in kept.event.items() if k != "phone"})
    state, records = check(state, T0 + SLA_MS, resending(tmp_path, 1))
    assert [r.topic for r in records] == [MISSING_NOTIFICATIONS], "the alert, and no crash"
    assert state.alerted_at_ms == T0 + SLA_MS
    assert "no field 'phone'" in caplog.text and "+628111" not in caplog.text
