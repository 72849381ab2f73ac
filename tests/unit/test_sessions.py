"""The session reconciler's rules, without Faust: each mismatch kind, the grace periods that keep
it from crying wolf, one record per change of verdict and a tombstone once resolved."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from herald.schemas.catalog import SESSION_MISMATCHES
from herald.schemas.codec import decode
from herald.streams.sessions import (
    ObservedGateways,
    SessionEntry,
    Verdict,
    declare,
    needs_reconcile,
    reconcile,
    verdict,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
GRACE_MS = 10_000
WA1, WA2 = "http://wa-1:8081", "http://wa-2:8081"


def ms(seconds: float) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp() * 1000)


def event(status="connected", instance=WA1, at_s=0.0, event_id="0b7f6c0e-5d1a-4c4e-9a51-3e2f1d0c9b8a"):
    return {"event_id": event_id, "session_id": "webjs_1_a", "workspace_id": "1", "phone": "+62811",
            "status": status, "gateway_instance": instance, "metadata": {},
            "occurred_at": T0 + timedelta(seconds=at_s)}


def report(gateways: ObservedGateways, instance: str, at_s: float, **sessions: str) -> set[str]:
    return gateways.apply({"event_id": "e", "instance": instance, "instance_name": None,
                           "observed_at": T0 + timedelta(seconds=at_s), "report_interval_ms": 2000,
                           "sessions": [{"session_id": s, "status": v} for s, v in sessions.items()]})


def judged(gateways: ObservedGateways, now_s: float, **declared_kw) -> Verdict | None:
    entry = declare(None, event(**declared_kw), "webjs_1_a")
    assert entry.declared is not None
    return verdict(entry.declared, gateways, ms(now_s), GRACE_MS)


def test_connected_where_declared_is_no_mismatch():
    gateways = ObservedGateways()
    report(gateways, WA1, 30, webjs_1_a="connected")
    assert judged(gateways, 31) is None


def test_gone_from_a_reporting_instance_is_not_found_only_after_the_grace_period():
    gateways = ObservedGateways()
    report(gateways, WA1, 20, webjs_1_a="connected")
    report(gateways, WA1, 22)  # restarted without its sessions (seed 004)
    assert judged(gateways, 29) is None, "seen connected 9 s ago: within the grace period"
    report(gateways, WA1, 30)
    assert judged(gateways, 31) == Verdict("not_found")


def test_reported_but_not_connected_on_its_instance_is_not_found_with_what_it_reports():
    gateways = ObservedGateways()
    report(gateways, WA1, 30, webjs_1_a="qr_pending")
    assert judged(gateways, 31) == Verdict("not_found", None, "qr_pending")


def test_connected_on_another_instance_is_instance_moved():
    gateways = ObservedGateways()
    report(gateways, WA2, 30, webjs_1_a="connected")  # wa-1 crashed and stays silent (seed 002)
    assert judged(gateways, 31) == Verdict("instance_moved", WA2, None)


def test_declared_disconnected_but_connected_somewhere_is_status_drift():
    gateways = ObservedGateways()
    report(gateways, WA1, 30, webjs_1_a="connected")
    assert judged(gateways, 31, status="disconnected") == Verdict("status_drift", WA1, "connected")
    assert judged(gateways, 31, status="qr_pending", instance=None) == Verdict("status_drift", WA1, None)


def test_an_instance_that_stops_reporting_leaves_its_sessions_unobserved_not_lost():
    gateways = ObservedGateways()
    report(gateways, WA1, 20, webjs_1_a="connected")
    report(gateways, WA2, 40)
    assert judged(gateways, 29) is None
    assert judged(gateways, 31) == Verdict("unobserved"), "wa-1 silent for 11 s"
    assert judged(ObservedGateways(), 31) == Verdict("unobserved"), "no instance reports at all"


def test_a_fresh_declaration_gets_the_grace_period_before_any_verdict():
    gateways = ObservedGateways()
    report(gateways, WA1, 30, webjs_1_a="connected")
    # Reassigned to wa-2 at 25 s; wa-1's last report predates the move's effect.
    assert judged(gateways, 31, instance=WA2, at_s=25) is None
    assert judged(gateways, 36, instance=WA2, at_s=25) == Verdict("instance_moved", WA1, None)


def test_a_metadata_only_event_does_not_restart_the_grace_period():
    first = declare(None, event(at_s=0), "webjs_1_a")
    again = declare(first, event(at_s=50, event_id="1b7f6c0e-5d1a-4c4e-9a51-3e2f1d0c9b8a"), "webjs_1_a")
    assert again.declared is not None and first.declared is not None
    assert again.declared.changed_at_ms == first.declared.changed_at_ms
    assert again.declared.occurred_at_ms == ms(50)
    moved = declare(again, event(instance=WA2, at_s=60), "webjs_1_a")
    assert moved.declared is not None and moved.declared.changed_at_ms == ms(60)


def test_an_older_report_arriving_late_changes_nothing():
    gateways = ObservedGateways()
    report(gateways, WA1, 30)
    assert report(gateways, WA1, 28, webjs_1_a="connected") == set()
    assert judged(gateways, 39) == Verdict("not_found")


def test_a_verdict_is_reported_once_then_tombstoned_when_resolved():
    gateways = ObservedGateways()
    report(gateways, WA1, 30)
    entry = declare(None, event(), "webjs_1_a")
    assert needs_reconcile(entry, gateways, ms(31), GRACE_MS)
    entry2, records = reconcile(entry, "webjs_1_a", gateways, ms(31), GRACE_MS)
    assert entry2 is not None and [r.topic for r in records] == [SESSION_MISMATCHES]
    body = decode(records[0].value).record
    assert (body["kind"], body["declared_instance"], body["workspace_id"]) == ("not_found", WA1, "1")
    assert body["declared_at"] == T0 and "connected on no instance for over 10 s" in body["reason"]
    assert not needs_reconcile(entry2, gateways, ms(40), GRACE_MS)
    assert reconcile(entry2, "webjs_1_a", gateways, ms(40), GRACE_MS) == (entry2, []), "once"
    report(gateways, WA1, 41, webjs_1_a="connected")
    entry3, records = reconcile(entry2, "webjs_1_a", gateways, ms(42), GRACE_MS)
    assert entry3 == SessionEntry(entry2.declared, None)
    assert [(r.key, r.value) for r in records] == [(b"webjs_1_a", None)]


def test_a_lost_session_whose_instance_then_reports_it_not_connected_is_the_same_mismatch():
    """A reconnect asked for after a loss makes its instance report it waiting for a QR scan,
    before the declared disconnect may arrive: the evidence changed, not the mismatch."""
    gateways = ObservedGateways()
    report(gateways, WA1, 30)
    lost, records = reconcile(declare(None, event(), "webjs_1_a"), "webjs_1_a", gateways, ms(31), GRACE_MS)
    assert lost is not None and lost.open == Verdict("not_found", None, None) and len(records) == 1
    report(gateways, WA1, 32, webjs_1_a="qr_pending")
    assert judged(gateways, 33) == Verdict("not_found", None, "qr_pending")
    still, records = reconcile(lost, "webjs_1_a", gateways, ms(33), GRACE_MS)
    assert records == [], "one loss, one verdict"
    assert still is not None and still.open == Verdict("not_found", None, "qr_pending")
    disconnected = declare(still, event(status="disconnected", at_s=34), "webjs_1_a")
    _, records = reconcile(disconnected, "webjs_1_a", gateways, ms(45), GRACE_MS)
    assert [(r.key, r.value) for r in records] == [(b"webjs_1_a", None)], "resolved by one tombstone"


def test_the_same_verdict_reached_twice_has_the_same_event_id():
    gateways = ObservedGateways()
    report(gateways, WA1, 30)
    entry = declare(None, event(), "webjs_1_a")
    first = reconcile(entry, "webjs_1_a", gateways, ms(31), GRACE_MS)[1][0]
    second = reconcile(entry, "webjs_1_a", gateways, ms(35), GRACE_MS)[1][0]
    assert first.headers["event-id"] == second.headers["event-id"]


def test_a_deleted_session_resolves_its_mismatch_and_is_forgotten():
    gateways = ObservedGateways()
    report(gateways, WA1, 30)
    entry, _ = reconcile(declare(None, event(), "webjs_1_a"), "webjs_1_a", gateways, ms(31), GRACE_MS)
    assert entry is not None and entry.open is not None
    gone, records = reconcile(declare(entry, None, "webjs_1_a"), "webjs_1_a", gateways, ms(32), GRACE_MS)
    assert gone is None and [(r.key, r.value) for r in records] == [(b"webjs_1_a", None)]


def test_an_entry_survives_its_json_round_trip():
    gateways = ObservedGateways()
    report(gateways, WA2, 30, webjs_1_a="connected")
    entry, _ = reconcile(declare(None, event(), "webjs_1_a"), "webjs_1_a", gateways, ms(31), GRACE_MS)
    assert entry is not None
    assert SessionEntry.from_json(json.loads(json.dumps(entry.as_json()))) == entry


def test_memory_is_bounded_by_what_is_still_reported():
    gateways = ObservedGateways()
    report(gateways, WA1, 10, old="connected")
    report(gateways, WA2, 50, new="connected")
    gateways.forget_before(ms(40))
    assert gateways.last_connected_ms("old") is None and gateways.last_connected_ms("new") == ms(50)
    assert set(gateways.reporting(ms(50), GRACE_MS)) == {WA2}


def test_a_report_names_the_sessions_it_may_have_changed_those_it_holds_and_those_it_dropped():
    gateways = ObservedGateways()
    assert report(gateways, WA1, 10, a="connected", b="connected") == {"a", "b"}
    assert report(gateways, WA1, 12, b="connected", c="qr_pending") == {"a", "b", "c"}
