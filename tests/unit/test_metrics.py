"""Collectors turn the stages' own counters into Prometheus families."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import generate_latest

from herald.consumers.delivery import DeliveryCounts
from herald.infra.latency import LatencyHistogram
from herald.ops.metrics import DeliveryCollector, PipelineCollector, registry_of


def test_latency_buckets_are_cumulative():
    hist = LatencyHistogram(bounds=(0.1, 1.0))
    for seconds in (0.05, 0.5, 0.7, 3.0):
        hist.observe(seconds)
    assert hist.cumulative() == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
    assert hist.count == 4 and abs(hist.total_s - 4.25) < 1e-9


def test_delivery_metrics_by_outcome_tier_and_error_class():
    counts = DeliveryCounts(sent=7, retries_scheduled=3, dead_lettered=1, by_error_class={"HTTP500": 3},
                            retries_by_tier={1: 2, 2: 1})
    handler = SimpleNamespace(counts=counts, latency=LatencyHistogram())
    handler.latency.observe(0.02)
    text = generate_latest(registry_of(DeliveryCollector("email", lambda: {"notifications.email": handler})))
    lines = text.decode()
    assert 'herald_delivery_outcomes_total{channel="email",outcome="sent",topic="notifications.email"} 7.0' \
        in lines
    assert 'herald_delivery_retries_scheduled_total{channel="email",tier="2"} 1.0' in lines
    assert 'herald_delivery_errors_total{channel="email",error_class="HTTP500"} 3.0' in lines
    assert 'herald_delivery_provider_seconds_count{channel="email",topic="notifications.email"} 1.0' in lines


def test_a_dependency_that_did_not_answer_is_reported_down_and_its_figures_left_out():
    collector = PipelineCollector(lambda: {"up": {"database": True, "kafka": False},
                                           "outbox": {"rows": 4, "oldest_age_s": 1.5}, "dlq_open": {}})
    lines = generate_latest(registry_of(collector)).decode()
    assert 'herald_up{part="kafka"} 0.0' in lines and "herald_outbox_rows 4.0" in lines
    assert "herald_consumer_lag" not in lines
