"""One `herald deliver` process: a worker per topic of a channel (requests, then each retry tier).

Each worker is a member of its topic's own consumer group, on a thread of its own with its
own event loop, HTTP client, consumer and transactional producer. The whatsapp workers of
one process share one session directory, read from sessions.events.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer

from herald.consumers.channel_controls import ChannelControls, ChannelGate
from herald.consumers.channel_kinds import ChannelContext, provider_for
from herald.consumers.delivery import ChannelDelivery, DeliveryCounts, Provider
from herald.consumers.retry_policy import Jitter, RetryPolicy
from herald.consumers.session_directory import SessionDirectory
from herald.consumers.topic_feed import Apply, TopicFeed
from herald.consumers.worker import DeliveryWorker, WorkerConfig, WorkerStats
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import (
    consumer_config,
    membership_config,
    process_client_id,
    transactional_producer_config,
)
from herald.infra.settings import Settings
from herald.ops.rejoin import run_rejoining
from herald.schemas.catalog import (
    CHANNEL_CONTROL,
    RETRY_TIERS,
    SESSION_EVENTS,
    consumer_group,
    delivery_topics,
    qualified,
)
from herald.schemas.catalog_model import Catalog, ChannelSpec, RetrySpec
from herald.schemas.templates import TemplateSet

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """What each worker of the process did, by topic."""

    workers: dict[str, WorkerStats] = field(default_factory=dict)
    counts: dict[str, DeliveryCounts] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {topic: {**vars(self.workers[topic]), **vars(self.counts[topic])} for topic in self.workers}

    def totals(self) -> dict[str, int]:
        """The process's work in a few numbers, summed over its topics (for its stop line)."""
        names = ("consumed", "sent", "retries_scheduled", "deferred", "dead_lettered", "failed_transactions",
                 "handed_back")
        return {name: sum(row[name] for row in self.as_dict().values()) for name in names}


def retry_policy(spec: RetrySpec) -> RetryPolicy:
    """A channel's retry policy as the catalog declares it (checked there)."""
    return RetryPolicy(tiers_s=spec.tiers, base_s=spec.base, cap_s=spec.cap, jitter=Jitter(spec.jitter),
                       max_attempts=spec.max_attempts, max_age_s=spec.max_age)


class DeliveryProcess:
    def __init__(self, settings: Settings, catalog: Catalog, bootstrap: str, channel: str,
                 tiers: tuple[int, ...] | None = None) -> None:
        if channel not in catalog.channels:
            raise ValueError(f"unknown channel {channel!r}; the catalog declares: "
                             f"{', '.join(catalog.channels)}")
        topics = delivery_topics(channel)
        chosen = tiers if tiers is not None else tuple(range(len(topics)))
        unknown = [t for t in chosen if not 0 <= t < len(topics)]
        if unknown:
            raise ValueError(f"no tier {unknown[0]}: 0 is the request topic, "
                             f"1..{RETRY_TIERS} the retry tiers")
        self._settings = settings
        self._bootstrap = bootstrap
        self._channel = channel
        self._spec: ChannelSpec = catalog.channels[channel]
        self._policy = retry_policy(self._spec.retry)
        self._topics = [topics[t] for t in chosen]
        self._directory = SessionDirectory()
        self._controls = ChannelControls()
        self.gate = ChannelGate(channel, self._controls)
        self._templates = TemplateSet(catalog.template_dir)
        self.workers: dict[str, DeliveryWorker] = {}
        self.handlers: dict[str, ChannelDelivery] = {}

    @property
    def topics(self) -> list[str]:
        """The catalog topics this process delivers from: requests and/or retry tiers."""
        return list(self._topics)

    def run(self, stop: threading.Event, drain: bool = False) -> DeliveryReport:
        """Until `stop`; a worker that fails stops its siblings gracefully, and the error is
        raised here, so the process exits non-zero and its supervisor restarts it."""
        controls = self.follow(CHANNEL_CONTROL, self._controls.apply)
        feed = self.follow(SESSION_EVENTS, self._directory.apply) if self._spec.kind == "whatsapp-gateway" \
            else None
        threads, errors = [], []

        def run_worker(topic: str) -> None:
            try:
                run_rejoining(lambda: self.build_worker(topic).run(stop, drain), f"the {topic} worker", stop)
            except BaseException as exc:
                log.exception("a delivery worker failed; stopping its siblings")
                errors.append(exc)
                stop.set()

        try:
            for topic in self._topics:
                thread = threading.Thread(target=run_worker, args=(topic,), name=f"deliver {topic}")
                thread.start()
                threads.append(thread)
        except BaseException:
            stop.set()  # the workers already started must not outlive this call
            raise
        finally:
            for thread in threads:
                thread.join()
            controls.stop()
            if feed is not None:
                feed.stop()
        if errors:
            raise errors[0]
        return DeliveryReport({t: w.stats for t, w in self.workers.items()},
                              {t: h.counts for t, h in self.handlers.items()})

    def follow(self, topic: str, apply: Apply) -> TopicFeed:
        """Read the whole topic before the first delivery, then follow it."""
        feed = TopicFeed(self._bootstrap, qualified(topic, self._settings.namespace), apply)
        feed.start(Deadline(60))
        log.info("%s read to its end (channel %s %s, %d sessions known)", topic, self._channel,
                 "paused" if self.gate.paused else "running", len(self._directory))
        return feed

    def build_worker(self, topic: str) -> DeliveryWorker:
        settings = self._settings
        group = consumer_group("deliver", topic, settings.namespace)
        config = WorkerConfig(topic=topic, namespace=settings.namespace, consumer_group=group,
                              concurrency=self._spec.concurrency,
                              commit_interval_s=settings.delivery_commit_interval_s,
                              transaction_timeout_s=settings.delivery_transaction_timeout_s,
                              settle_timeout_s=settings.delivery_timeout_s + 2,
                              shutdown_timeout_s=settings.delivery_timeout_s + 2,
                              instance_id=settings.instance_id)
        # fetch.wait.max.ms stays librdkafka's 500: the broker answers a waiting fetch as soon
        # as a record arrives, and a 10 ms wait cost the broker 14 % of a core with every worker idle.
        consumer = Consumer(consumer_config(self._bootstrap, group, **membership_config(
            settings.kafka_session_timeout_s, settings.instance_id, process_client_id("deliver"))))
        handler = ChannelDelivery(self._channel, group, self._policy, self._provider())
        self.handlers[topic] = handler
        worker = DeliveryWorker(config, consumer, self._new_producer, handler, self.gate)
        self.workers[topic] = worker
        return worker

    def _new_producer(self, transactional_id: str) -> Producer:
        timeout_s = self._settings.delivery_transaction_timeout_s
        return Producer(transactional_producer_config(self._bootstrap, transactional_id, timeout_s))

    def _provider(self) -> Provider:
        return provider_for(ChannelContext(self._channel, self._spec, self._settings.delivery_timeout_s,
                                           self._templates, self._directory, self.gate))
