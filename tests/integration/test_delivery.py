"""Delivery against the simulators: poison, transient and fatal failures, retry tiers, kill -9.

Counted at the simulators (what a person would receive), and on the status and DLQ topics.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from herald.infra.kafka_views import group_views
from herald.schemas import headers as h
from herald.schemas.catalog import consumer_group, delivery_topics, notification_topic, qualified
from herald.schemas.codec import decode
from tests.integration.delivery_support import (
    dead_letters,
    delivering,
    fast_settings,
    header_dict,
    latest_statuses,
    produce_requests,
    session_on,
    statuses,
)
from tests.support import HERALD, process_env, simulator_network, wait_until


@pytest.fixture
def sims(log_dir):
    with simulator_network(log_dir) as running:
        yield running


def accepted(network, channel: str) -> int:
    return network.accepted(channel)


def test_poison_goes_to_the_dlq_with_its_reason_while_its_partition_flows(settings, sims):
    network, _group = sims
    configured = fast_settings(settings, network)
    produce_requests(settings, "email", range(40), poison=2, partition=0)
    with delivering(configured, "email", tiers=(0,)) as outcome:
        wait_until(lambda: accepted(network, "email") >= 40, 60, "the records behind the poison")
        dead = dead_letters(settings, "email", 2)
    report = outcome["report"].as_dict()[notification_topic("email")]
    assert (report["sent"], report["undecodable"], report["dead_lettered"]) == (40, 2, 2)
    assert sorted(m.key() for m in dead) == [b"poison-0", b"poison-1"]
    for message in dead:
        headers = header_dict(message)
        assert message.value() == b'{"not": "avro"}', "the input is kept as it came"
        assert headers[h.ERROR_CLASS] == "UndecodableRecord" and "magic byte" in headers[h.ERROR_MESSAGE]
        assert headers[h.ORIGINAL_TOPIC] == "notifications.email" and headers[h.ORIGINAL_PARTITION] == "0"
        assert int(headers[h.ORIGINAL_OFFSET]) > 0 and int(headers[h.ORIGINAL_TIMESTAMP]) > 0
        assert headers[h.CONSUMER_GROUP] == consumer_group("deliver", "notifications.email",
                                                           settings.namespace)
        assert (headers[h.ATTEMPTS], headers[h.REPLAY_COUNT]) == ("0", "0")
    stats = network.stats("email")
    assert (stats["accepted"], stats["duplicates"]) == (40, 0)


def test_a_fatal_400_lands_in_the_dlq_with_all_headers(settings, sims):
    network, _group = sims
    network.faults(network.email, fail_next=1, status=400)
    (first, *_rest) = produce_requests(settings, "email", range(10))
    with delivering(fast_settings(settings, network), "email"):
        wait_until(lambda: accepted(network, "email") >= 9, 60, "the other nine")
        (dead,) = dead_letters(settings, "email", 1)
        latest = latest_statuses(settings, 10)
    headers = header_dict(dead)
    request = decode(dead.value()).record
    assert dead.key() == request["notification_id"].encode(), "key kept"
    assert headers["x-upstream"] == "kept" and headers[h.CORRELATION_ID].startswith("corr-")
    assert headers[h.ERROR_CLASS] == "ProviderRejected"
    assert headers[h.ERROR_MESSAGE].startswith("HTTP 400")
    assert headers[h.ATTEMPTS] == "1" and headers[h.REPLAY_COUNT] == "0"
    assert headers[h.TRACE_ID] == h.trace_id_of(headers[h.TRACEPARENT])
    assert h.parse_iso(headers[h.FIRST_FAILED_AT]) is not None
    assert headers[h.ORIGINAL_TOPIC] == "notifications.email" and h.ORIGINAL_OFFSET in headers
    assert headers[h.CONSUMER_GROUP].endswith("herald.deliver.notifications.email")
    dead_status = latest[request["notification_id"]]
    assert (dead_status["status"], dead_status["error_class"]) == ("dead_lettered", "ProviderRejected")
    assert Counter(s["status"] for s in latest.values()) == {"sent": 9, "dead_lettered": 1}
    assert first["notification_id"] in latest


def test_with_30_percent_transient_failures_each_notification_arrives_exactly_once(settings, sims):
    network, _group = sims
    for instance in network.whatsapp:
        network.faults(instance, error_rate=0.3, status=500)
    session_on(settings, network, "s-1", "default", network.whatsapp[0])
    requests = produce_requests(settings, "whatsapp", range(300))
    with delivering(fast_settings(settings, network), "whatsapp") as outcome:
        wait_until(lambda: accepted(network, "whatsapp") >= 300, 120, "all 300 through the retry tiers")
        latest = latest_statuses(settings, 300)
        # The retry tiers are written in transactions: caught up means committed past their markers.
        ns = settings.namespace
        groups = [(consumer_group("deliver", topic, ns), [qualified(topic, ns)])
                  for topic in delivery_topics("whatsapp")]
        wait_until(lambda: {v.lag for v in group_views(settings.kafka_bootstrap, groups).values()} == {0}, 30,
                   "every group of the channel at lag 0")
    stats = network.stats("whatsapp")
    delivered = Counter(m["notification_id"] for m in network.messages("whatsapp"))
    assert set(delivered) == {r["notification_id"] for r in requests}, "lost"
    assert max(delivered.values()) == 1 and stats["duplicates"] == 0, "doubled"
    assert stats["rejected"] > 30, "the faults must have bitten to mean anything"
    assert {s["status"] for s in latest.values()} == {"sent"}
    report = outcome["report"].as_dict()
    if not any(r["failed_transactions"] for r in report.values()):  # a rewind repeats some work
        assert sum(r["retries_scheduled"] for r in report.values()) == stats["rejected"]
        assert sum(r["consumed"] for name, r in report.items() if ".retry." in name) == stats["rejected"]


def test_a_retry_never_runs_before_its_due_time(settings, sims):
    network, _group = sims
    network.faults(network.email, fail_next=40, status=503)
    produce_requests(settings, "email", range(40))
    slow = fast_settings(settings, network, tiers=[0.5, 1.0, 2.0], base=1.0, cap=2.0)
    with delivering(slow, "email") as outcome:
        wait_until(lambda: accepted(network, "email") >= 40, 90, "every retry")
        scheduled = [s for s in statuses(settings, 80) if s["status"] == "retry_scheduled"]
    accepted_at = {m["notification_id"]: m["accepted_at_ms"] for m in network.messages("email")}
    assert len(scheduled) == 40
    early = [s for s in scheduled if accepted_at[s["notification_id"]] < _ms(s["due_at"])]
    assert not early, f"{len(early)} retries ran before their due time"
    assert sum(r["paused_until_due"] for r in outcome["report"].as_dict().values()) > 0


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


def test_kill_9_of_one_of_two_workers_loses_and_doubles_nothing(settings, sims, log_dir):
    network, group = sims
    network.faults(network.email, latency_ms=30)
    produce_requests(settings, "email", range(600))
    # 4 in flight at 30 ms: about 130/s per worker, so the kill lands with most of the work left
    # (at the default concurrency both workers finished all 600 before the kill once).
    configured = fast_settings(settings, network, concurrency=4)
    group.env = process_env(configured, network)
    victim = group.start("deliver-1", [*HERALD, "deliver", "--channel", "email", "--tier", "0"])
    group.start("deliver-2", [*HERALD, "deliver", "--channel", "email", "--tier", "0"])
    wait_until(lambda: accepted(network, "email") >= 100, 90, "deliveries to be under way")
    group.kill("deliver-1")
    assert victim.returncode is not None
    assert accepted(network, "email") < 600, "the kill must land mid-stream to mean anything"
    sibling = group.processes["deliver-2"]

    def sibling_finished() -> bool:
        assert sibling.poll() is None, f"the sibling exited:\n{group.report()}"
        return accepted(network, "email") >= 600

    wait_until(sibling_finished, 120, "the sibling to finish the work")
    delivered = Counter(m["subject_id"] for m in network.messages("email"))
    assert len(delivered) == 600, "lost"
    assert network.stats("email")["duplicates"] == 0 and max(delivered.values()) == 1, "doubled"


def test_a_rebalance_commits_finished_work_before_handing_partitions_over(settings, sims):
    """A second worker joins mid-stream: the first lets its revoked partitions finish and
    commits them, so the newcomer repeats nothing (no request reaches the provider twice)."""
    network, group = sims
    network.faults(network.email, latency_ms=30)
    produce_requests(settings, "email", range(1500))
    # 4 in flight at 30 ms: about 130/s, so the joiner arrives mid-stream.
    configured = fast_settings(settings, network, concurrency=4)
    with delivering(configured, "email", tiers=(0,)) as outcome:
        wait_until(lambda: accepted(network, "email") >= 100, 60, "the first worker under way")
        group.env = process_env(configured, network)
        group.start("joiner", [*HERALD, "deliver", "--channel", "email", "--tier", "0"])
        wait_until(lambda: accepted(network, "email") >= 1500, 120, "both workers to finish")
    stats = network.stats("email")
    assert (stats["accepted"], stats["duplicates"]) == (1500, 0)
    first = outcome["report"].as_dict()[notification_topic("email")]
    assert 100 <= first["committed"] < 1500, "the joiner must have taken partitions mid-stream"
    assert first["handed_back"] == 0, "in-flight work finished before the partitions moved"
    # A repeat at the provider happens only when a commit was refused twice around the
    # rebalance (the partitions are then rewound); otherwise nothing is sent twice.
    assert stats["replays"] == 0 or first["failed_transactions"] >= 2


def test_sigterm_commits_what_was_delivered_and_leaves_the_rest(settings, sims):
    network, group = sims
    network.faults(network.email, latency_ms=30)
    produce_requests(settings, "email", range(600))
    group.env = process_env(fast_settings(settings, network), network)
    first = group.start("first", [*HERALD, "deliver", "--channel", "email", "--tier", "0"])
    wait_until(lambda: accepted(network, "email") >= 100, 60, "deliveries under way")
    group.stop("first")  # SIGTERM
    assert first.returncode == 0, "a graceful stop"
    group.start("second", [*HERALD, "deliver", "--channel", "email", "--tier", "0"])
    wait_until(lambda: accepted(network, "email") >= 600, 120, "the second worker to finish")
    stats = network.stats("email")
    assert (stats["accepted"], stats["duplicates"], stats["replays"]) == (600, 0, 0), \
        "nothing the first worker delivered was delivered again"
