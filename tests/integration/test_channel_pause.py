"""Seed 003's "stop the retry processor while the provider is down, bring it back gradually":
a paused channel sends nothing, dead-letters nothing and loses nothing while paused, its retry
tiers wait past their due times, and on resume every notification arrives once, at the chosen
rate. Through a real delivery process, a real broker and the email provider's simulator."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from herald.infra.settings import Settings
from herald.ops.channel_control import ChangeRequest, publish_change
from herald.schemas.catalog import CHANNEL_CONTROL, delivery_topics, qualified
from tests.catalogs import example
from tests.doc_blocks import blocks
from tests.integration.delivery_support import (
    dead_letters,
    delivering,
    fast_settings,
    latest_statuses,
    produce_requests,
    statuses,
)
from tests.integration.test_ops_api import api  # noqa: F401 (the fixture)
from tests.support import HERALD, process_env, read_topic, simulator_network, wait_until

RATE = 5.0  # sends per second after the resume


@pytest.fixture
def sims(log_dir):
    with simulator_network(log_dir) as running:
        yield running


def change(settings: Settings, state: str, rate: float | None = None) -> None:
    request = ChangeRequest("email", None, state, "provider down" if state == "paused" else "", "test", rate)
    publish_change(settings.kafka_bootstrap, settings.namespace, request.checked(example()))


def holds(outcome: dict[str, Any]) -> int:
    return sum(worker.stats.holds for worker in outcome["process"].workers.values())


def test_a_paused_channel_sends_and_loses_nothing_and_resumes_at_its_rate(settings, sims):
    network, _group = sims
    network.faults(network.email, fail_next=20, status=503)
    # Retries 2 to 4 s after a failure ("equal" jitter never halves below the base).
    configured = fast_settings(settings, network, tiers=[1.0, 2.0, 4.0], base=4.0, cap=4.0, jitter="equal")
    first = produce_requests(settings, "email", range(20))
    with delivering(configured, "email") as outcome:
        wait_until(lambda: sum(s["status"] == "retry_scheduled" for s in statuses(settings)) >= 20, 60,
                   "every first attempt failed and was scheduled on a retry tier")
        change(settings, "paused")
        wait_until(lambda: holds(outcome) >= len(delivery_topics("email")), 30,
                   "every worker of the channel holding its partitions")
        later = produce_requests(settings, "email", range(20, 30))
        last_due = max(s["due_at"] for s in statuses(settings) if s["status"] == "retry_scheduled")
        time.sleep(max(0.0, last_due.timestamp() - time.time()) + 2)  # every retry due, none sent
        paused_stats = network.stats("email")
        change(settings, "running", rate=RATE)
        wait_until(lambda: network.accepted("email") >= 30, 60, "every notification after the resume")
        latest = latest_statuses(settings, 30)
    assert (paused_stats["accepted"], paused_stats["rejected"]) == (0, 20), "sent or tried while paused"
    delivered = Counter(m["notification_id"] for m in network.messages("email"))
    assert set(delivered) == {r["notification_id"] for r in first + later}, "lost"
    assert max(delivered.values()) == 1 and network.stats("email")["duplicates"] == 0, "doubled"
    assert {s["status"] for s in latest.values()} == {"sent"}
    assert dead_letters(settings, "email", at_least=0) == [], "dead-lettered because of the pause"
    times = sorted(m["accepted_at_ms"] for m in network.messages("email"))
    assert times[-1] - times[0] >= 0.8 * 1000 * (len(times) - 1) / RATE, "faster than the chosen rate"


def test_operators_pause_and_resume_over_the_api_audited_and_shown_in_health(settings, api):  # noqa: F811
    client, tokens, _first = api
    as_viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    as_operator = {"Authorization": f"Bearer {tokens['operator']}"}
    refused = client.post("/v1/channels/email/pause", json={"reason": "provider down"}, headers=as_viewer)
    assert refused.status_code == 403
    unknown = client.post("/v1/channels/sms/pause", json={"reason": "x"}, headers=as_operator)
    assert unknown.status_code == 400 and "unknown channel 'sms'" in unknown.json()["detail"]
    no_reason = client.post("/v1/channels/email/pause", json={"reason": ""}, headers=as_operator)
    assert no_reason.status_code == 422
    paused = client.post("/v1/channels/email/pause", json={"reason": "provider down"}, headers=as_operator)
    assert paused.status_code == 200, paused.text
    shown = {row["channel"]: row for row in client.get("/v1/channels", headers=as_viewer).json()["items"]}
    assert shown["email"]["state"] == "paused" and shown["whatsapp"]["state"] == "running"
    assert (shown["email"]["last_change"]["reason"], shown["email"]["last_change"]["actor"]) == (
        "provider down", "token:operator")
    checks = {c["name"]: c for c in client.get("/v1/health", headers=as_viewer).json()["checks"]}
    assert checks["channels"]["state"] == "warn" and "email since" in checks["channels"]["detail"]
    resumed = client.post("/v1/channels/email/resume", json={"rate_per_s": 2}, headers=as_operator)
    assert resumed.json()["rate_per_s"] == 2
    _run_the_docs_commands(settings)
    history = subprocess.run([*HERALD, "channel", "history", "--json"], env=process_env(settings),
                             capture_output=True, text=True, timeout=60, check=True)
    told = [(row["target"], row["state"], row["rate_per_s"]) for row in json.loads(history.stdout)]
    assert told == [("whatsapp/127.0.0.1:8102", "running", None), ("whatsapp/127.0.0.1:8102", "paused", None),
                    ("email", "running", 5.0), ("email", "paused", None),
                    ("email", "running", 2.0), ("email", "paused", None)], "the audit log, newest first"
    records = read_topic(settings.kafka_bootstrap, qualified(CHANNEL_CONTROL, settings.namespace), at_least=6)
    assert len(records) == 6, "each change once"


def _run_the_docs_commands(settings: Settings) -> None:
    """docs/operators.md's block, as an operator runs it."""
    (block,) = blocks("docs/operators.md", "## Pausing a channel", "sh")
    for line in block.splitlines():
        done = subprocess.run(["sh", "-c", line.replace("herald ", " ".join(HERALD) + " ", 1)],
                              env=process_env(settings), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (line, done.stderr[-2000:])
