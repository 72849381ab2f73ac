"""Prometheus metrics. Each process exports what only it knows; the ops API exports what the
whole pipeline shows (read at scrape time from the database and Kafka):

- relay (`herald relay`, on HERALD_METRICS_PORT): rows published, batches, failures, shards
  owned, and commit->ack latency (per batch, its oldest row).
- delivery (`herald deliver`, on HERALD_METRICS_PORT): outcomes by channel and topic, provider
  call latency, retries scheduled by tier (retry pressure), dead letters by error class.
- pipeline (the ops API's /metrics): outbox backlog and oldest age, open dead letters per
  topic, per needed stage whether it runs, consumer lag per group (records, seconds) and its
  live members, open missing notifications by type, open session mismatches by kind, and
  whether the database and Kafka answered.

Collectors read counters the stages keep anyway (`RelayStats`, `DeliveryCounts`, the
`LatencyHistogram`s), so nothing on the hot path calls a metrics library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from herald.infra.latency import LatencyHistogram


def histogram(name: str, doc: str, labels: list[str],
              series: Iterable[tuple[list[str], LatencyHistogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in series:
        family.add_metric(values, hist.cumulative(), hist.total_s)
    return family


class RelayCollector(Collector):
    def __init__(self, relay: Any) -> None:
        self._relay = relay

    def collect(self) -> Iterator[Metric]:
        stats = self._relay.stats
        yield CounterMetricFamily("herald_relay_published", "Outbox rows published and acknowledged",
                                  stats.published)
        yield CounterMetricFamily("herald_relay_batches", "Transactions that published rows", stats.batches)
        yield CounterMetricFamily("herald_relay_failed_batches", "Batches rolled back (Kafka or database "
                                  "unavailable); their rows stay in the outbox", stats.failed_batches)
        yield GaugeMetricFamily("herald_relay_owned_shards", "Outbox shards this relay leases",
                                stats.owned_shards)
        yield histogram("herald_relay_commit_to_ack_seconds", "Per batch: its oldest row's time from the "
                        "writer's commit to the broker's acknowledgment", [],
                        [([], self._relay.ack_latency)])


class DeliveryCollector(Collector):
    """Reads a `DeliveryProcess`'s handlers (one per topic: requests and retry tiers)."""

    def __init__(self, channel: str, handlers: Callable[[], dict[str, Any]]) -> None:
        self._channel = channel
        self._handlers = handlers

    def collect(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily("herald_delivery_outcomes", "Records handled, by outcome",
                                       labels=["channel", "topic", "outcome"])
        retries = CounterMetricFamily("herald_delivery_retries_scheduled", "Retries scheduled, by the tier "
                                      "they went to: retry pressure", labels=["channel", "tier"])
        errors = CounterMetricFamily("herald_delivery_errors", "Provider failures by error class",
                                     labels=["channel", "error_class"])
        by_tier: Counter[int] = Counter()
        by_class: Counter[str] = Counter()
        handlers = self._handlers()
        for topic, handler in handlers.items():
            counts = handler.counts
            for outcome in ("sent", "retries_scheduled", "dead_lettered", "undecodable"):
                outcomes.add_metric([self._channel, topic, outcome], getattr(counts, outcome))
            by_tier.update(counts.retries_by_tier)
            by_class.update(counts.by_error_class)
        for tier, count in sorted(by_tier.items()):
            retries.add_metric([self._channel, str(tier)], count)
        for error_class, count in sorted(by_class.items()):
            errors.add_metric([self._channel, error_class], count)
        yield from (outcomes, retries, errors)
        yield histogram("herald_delivery_provider_seconds", "Provider call latency, whatever the outcome",
                        ["channel", "topic"], [([self._channel, t], h.latency) for t, h in handlers.items()])


class PipelineCollector(Collector):
    """The pipeline's state at scrape time; a part that does not answer reports herald_up 0."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read  # returns the health report's figures and which parts answered

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        up = GaugeMetricFamily("herald_up", "Whether a dependency answered this scrape", labels=["part"])
        for part, answered in figures["up"].items():
            up.add_metric([part], 1 if answered else 0)
        yield up
        if "outbox" in figures:
            yield GaugeMetricFamily("herald_outbox_rows", "Outbox rows waiting for a relay",
                                    figures["outbox"]["rows"])
            yield GaugeMetricFamily("herald_outbox_oldest_age_seconds", "Age of the oldest waiting row",
                                    figures["outbox"]["oldest_age_s"])
        yield from self._labelled(figures, "dlq_open", "herald_dlq_open", "Open dead letters", "topic")
        yield from self._labelled(figures, "stages", "herald_stage_up", "Whether a stage the pipeline "
                                  "needs runs: every group of it has a live member and lags within limits",
                                  "stage")
        yield from self._labelled(figures, "consumer_lag", "herald_consumer_lag",
                                  "Records not yet consumed", "group")
        yield from self._labelled(figures, "consumer_lag_s", "herald_consumer_lag_seconds",
                                  "How long the oldest unconsumed record has waited (since its due time)",
                                  "group")
        yield from self._labelled(figures, "consumer_members", "herald_consumer_members",
                                  "Live members of a consumer group", "group")
        yield from self._labelled(figures, "missing_by_type", "herald_missing_notifications_open",
                                  "Open missing notifications", "type")
        yield from self._labelled(figures, "mismatches_by_kind", "herald_session_mismatches_open",
                                  "Open session mismatches", "kind")

    @staticmethod
    def _labelled(figures: dict[str, Any], key: str, name: str, doc: str, label: str) -> Iterator[Metric]:
        if key in figures:
            family = GaugeMetricFamily(name, doc, labels=[label])
            for value, count in sorted(figures[key].items()):
                family.add_metric([value], count)
            yield family


def registry_of(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)  # describing would scrape when registered
    for collector in collectors:
        registry.register(collector)
    return registry


def serve_metrics(port: int, host: str, *collectors: Collector) -> None:
    """Serve /metrics on a thread of its own (prometheus_client's server); 0 serves nothing."""
    if port:
        start_http_server(port, host, registry=registry_of(*collectors))
