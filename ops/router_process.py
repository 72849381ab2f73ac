"""The router's process: its consume-transform-produce loop built from the settings."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, Producer

from herald.infra.kafka_io import (
    consumer_config,
    membership_config,
    process_client_id,
    transactional_producer_config,
)
from herald.infra.logs import log_start, log_stop
from herald.infra.settings import Settings
from herald.schemas.catalog import event_topics, qualified, stream_processor_group
from herald.schemas.catalog_model import Catalog
from herald.streams.router import Router
from herald.streams.router_loop import RouterLoop, RouterLoopConfig, RouterStats

log = logging.getLogger(__name__)


def build_router(settings: Settings, catalog: Catalog, bootstrap: str) -> RouterLoop:
    namespace = settings.namespace
    group = stream_processor_group(settings.streams_app_id, "router", namespace)
    config = RouterLoopConfig(group=group, namespace=namespace,
                              topics={qualified(t, namespace): t for t in event_topics(catalog)},
                              instance_id=settings.instance_id)
    consumer = Consumer(consumer_config(bootstrap, group, **membership_config(
        settings.kafka_session_timeout_s, settings.instance_id, process_client_id("router"))))

    def new_producer(transactional_id: str) -> Producer:
        timeout_s = config.transaction_timeout_s
        return Producer(transactional_producer_config(bootstrap, transactional_id, timeout_s))

    return RouterLoop(config, Router(catalog), consumer, new_producer)


def run_router(loop: RouterLoop, stop: threading.Event, produces: list[str]) -> RouterStats:
    """Route until `stop`; the start and stop lines say what it reads, writes and did."""
    log_start(log, "streams router", consumes=list(loop.config.topics), produces=produces,
              groups=[loop.config.group])
    stats = loop.run(stop)
    log_stop(log, "streams router", vars(stats))
    return stats
