"""The chaos suite's arithmetic: recovery time, verdicts, skips and the JSON line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from herald.infra.catalogs import read_catalog
from herald.infra.settings import Settings
from herald.proving.chaos import GOAL_RECOVERY_S, ChaosPlan, Outcome, recovery_seconds
from herald.proving.chaos_faults import SCENARIOS
from herald.proving.chaos_suite import chaos_settings, failed, skip_reason

CLEARED = 10_000.0


def test_recovery_lasts_until_the_last_late_e_ticket_arrived():
    verified = {"R1": 9_000.0, "R2": 9_900.0, "R3": 12_000.0, "R4": 14_000.0}
    arrived = {("R1", "email"): 9_100.0, ("R1", "whatsapp"): 13_500.0,  # owed at the clear, late
               ("R2", "email"): 10_000.0, ("R2", "whatsapp"): 10_100.0,  # owed, but on time
               ("R3", "email"): 18_000.0, ("R3", "whatsapp"): 12_100.0,  # after the clear, still held up
               ("R4", "email"): 14_200.0, ("R4", "whatsapp"): 14_300.0}
    assert recovery_seconds(verified, arrived, CLEARED) == 8.0


def test_nothing_late_after_the_clear_is_recovered_at_once():
    verified = {"R1": 1_000.0, "R2": 9_900.0}
    arrived = {("R1", "email"): 9_000.0, ("R1", "whatsapp"): 9_500.0,  # late, but before the clear
               ("R2", "email"): 10_100.0, ("R2", "whatsapp"): 10_200.0}
    assert recovery_seconds(verified, arrived, CLEARED) == 0.0


def test_an_owed_e_ticket_that_never_arrived_means_never_recovered():
    verified = {"R1": 9_000.0}
    assert recovery_seconds(verified, {("R1", "email"): 9_500.0}, CLEARED) is None


def test_nothing_owed_recovers_at_once_and_an_uncleared_fault_never():
    assert recovery_seconds({}, {}, CLEARED) == 0.0
    assert recovery_seconds({"R1": 1.0}, {("R1", "email"): 2.0, ("R1", "whatsapp"): 2.0}, None) is None


def test_shortfalls_name_each_missed_goal():
    met = Outcome("relay-kill", 100, 100, 0, 0, 2.0)
    assert met.shortfalls() == [] and not failed([met])
    missed = Outcome("broker-stop", 100, 97, 3, 1, GOAL_RECOVERY_S + 5, error="relay exited with status 1")
    assert missed.shortfalls() == ["3 lost", "1 duplicated", "recovery 15.0 s > 10 s",
                                   "relay exited with status 1"]
    assert failed([met, missed])
    assert Outcome("x", 1, 0, 1, 0, None).shortfalls() == ["1 lost", "never recovered"]


def test_a_slow_recovery_alone_is_reported_but_does_not_fail_the_run():
    slow = Outcome("broker-stop", 100, 100, 0, 0, 30.0)
    assert slow.shortfalls() == ["recovery 30.0 s > 10 s"] and not failed([slow])


def test_the_json_line_has_the_issue_s_keys_and_the_scenario_s_own_counts():
    line = json.loads(Outcome("poison-burst", 10, 10, 0, 0, 0.04, {"dead_lettered": 300}).json_line())
    assert line == {"scenario": "poison-burst", "written": 10, "delivered": 10, "lost": 0, "duplicated": 0,
                    "recovery_s": 0.0, "dead_lettered": 300}


def test_scenarios_that_stop_a_service_skip_when_it_is_not_embedded():
    settings = Settings(home=Path("/tmp/h"))
    assert skip_reason(SCENARIOS["broker-stop"], settings) == ""
    configured = dataclasses.replace(settings, kafka_bootstrap="k:9092", database_url="postgresql://x")
    assert "HERALD_KAFKA_BOOTSTRAP" in skip_reason(SCENARIOS["broker-stop"], configured)
    assert "HERALD_DATABASE_URL" in skip_reason(SCENARIOS["postgres-restart"], configured)
    assert skip_reason(SCENARIOS["relay-kill"], configured) == ""


def test_chaos_retries_outlast_an_outage_and_retry_within_seconds(tmp_path):
    settings = chaos_settings(Settings(home=tmp_path))
    catalog = read_catalog(settings.catalog, {})
    for channel in catalog.channels.values():
        assert channel.retry.cap <= 5.0, "a provider back is tried again within seconds"
        assert channel.retry.max_attempts * channel.retry.cap > ChaosPlan().outage_s, \
            "attempts are not exhausted (dead-lettered) during an outage"


def test_registrations_cover_warmup_fault_and_cooldown_at_the_rate():
    assert ChaosPlan(rate=20, warmup_s=10, cooldown_s=15).registrations(fault_s=60) == 1700
