"""The Faust applications: the missing-notification detector, the session reconciler and the
status stats, each wiring its pure rules to Kafka topics (the router is `streams.router_loop`)."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from herald.infra.kafka_io import partition_names, process_client_id
from herald.schemas.catalog import (
    GATEWAY_OBSERVATIONS,
    MISSING_NOTIFICATIONS,
    NOTIFICATION_STATUS,
    SESSION_EVENTS,
    SESSION_MISMATCHES,
    STATUS_STATS,
    TopicSpec,
    dead_letter_topic,
    event_topics,
    notification_topic,
    qualified,
)
from herald.schemas.records import OutgoingRecord
from herald.streams.config import FAUST_PROCESSORS, READY_MESSAGE, StreamsConfig
from herald.streams.faust_io import RAW_BYTES
from herald.streams.faust_kafka import read_committed_only
from herald.streams.missing_agents import add_missing_detector
from herald.streams.session_agents import add_session_reconciler
from herald.streams.status_agents import add_status_stats

log = logging.getLogger(__name__)

# Faust replays a table's whole changelog into memory at each start, and compaction never
# touches the active segment (7 days or 1 GiB by default): after some fifteen demos the missing
# detector's changelog held 96 MB, every write it ever made, and its replay took 19 s of the
# next demo's writing window. Rolled every ten minutes, a changelog is compacted down to its
# live entries and at most that much of recent writes.
CHANGELOG_SEGMENT_MS = 10 * 60 * 1000


def changelog_topics(app: faust.App) -> tuple[TopicSpec, ...]:
    """The changelog topic of each of the app's tables, as the catalog describes topics.

    Created before the worker starts: a worker that creates one itself may look at its
    partitions before the new topic's metadata has reached it, find none, and crash the
    table's agent for good (faust's PartitionsMismatch, seen once in a fresh-clone run).
    """
    return tuple(TopicSpec(table.changelog_topic.get_topic_name(), table.partitions or 1, "compact", -1,
                           "the table's key", "the table's value (JSON)", segment_ms=CHANGELOG_SEGMENT_MS)
                 for table in app.tables.values())


def create_app(config: StreamsConfig, bootstrap: str, processor: str) -> faust.App:
    namespace = config.namespace
    app_id = config.group(processor)
    # Faust's default is "<app id>-data" in the working directory, littering checkouts;
    # it creates only the last level itself.
    datadir = config.data_dir / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        datadir=str(datadir),
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Batches what a worker sends (outputs and table changelogs) for up to 50 ms, instead of
        # a produce request per record. At 5 ms it was already 13 % less CPU per event and
        # 16-22 % more events/s (herald bench streams, A/B); 50 ms came with the router's move
        # to confluent-kafka (024b67b): what Faust sends now (alerts, resends of late
        # notifications, statistics, changelogs) is on no notification's first path.
        producer_linger_ms=50,
        producer_max_batch_size=1_048_576,
        topic_replication_factor=config.replication_factor,
        processing_guarantee="at_least_once",
        broker_commit_interval=config.commit_interval_s,
        broker_session_timeout=config.session_timeout_s,
        broker_client_id=process_client_id(f"streams-{processor}"),
    )
    read_committed_only(app)
    _without_monitor(app)
    _log_rebalances(app, processor)
    _log_ready(app, processor)
    outputs = {
        name: app.topic(qualified(name, namespace), **RAW_BYTES)
        for name in [*map(notification_topic, config.catalog.channels),
                     *map(dead_letter_topic, event_topics(config.catalog)),
                     MISSING_NOTIFICATIONS, SESSION_MISMATCHES, STATUS_STATS,
                     *map(dead_letter_topic, (GATEWAY_OBSERVATIONS, NOTIFICATION_STATUS, SESSION_EVENTS))]
    }

    async def send(record: OutgoingRecord) -> None:
        if record.topic not in outputs:
            raise KeyError(f"streams produced to {record.topic!r}, not a declared output")
        # Sent while the event is being processed: Faust commits its offset only after
        # these sends are acknowledged (at-least-once).
        await outputs[record.topic].send(key=record.key, value=record.value,
                                         headers={k: v.encode() for k, v in record.headers.items()})

    if processor == "missing":
        add_missing_detector(app, config, send)
    elif processor == "sessions":
        add_session_reconciler(app, config, bootstrap, send)
    elif processor == "status":
        add_status_stats(app, config, send)
    else:
        raise ValueError(f"no Faust processor {processor!r}: the router runs on confluent-kafka "
                         f"(streams.router_loop); Faust runs {', '.join(FAUST_PROCESSORS)}")
    return app


def _without_monitor(app: faust.App) -> None:
    """Take Faust's Monitor out of the app's sensors once the app adds it at start.

    It keeps statistics of every event, table access and send for Faust's web view, which
    Herald turns off (`web_enabled=False`): its calls were 4 % of the missing detector's CPU."""
    add_dependencies = app.on_init_dependencies

    def without_it() -> Any:
        dependencies = add_dependencies()
        app.sensors.remove(app.monitor)
        return dependencies

    app.on_init_dependencies = without_it


def _log_ready(app: faust.App, processor: str) -> None:
    """Say when the first recovery is over: Faust replays every changelog into its in-memory
    tables at each start, and processes no event before that (seconds, on a changelog that
    ran many demos)."""
    started = time.monotonic()

    @app.task  # type: ignore[misc]
    async def say_ready() -> None:
        await app.tables.recovery.completed.wait()
        log.info("streams %s: %s, %.1f s after the app was made", processor, READY_MESSAGE,
                 time.monotonic() - started)


def _log_rebalances(app: faust.App, processor: str) -> None:
    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def revoked(_app: faust.App, revoked: set[Any], **_kwargs: Any) -> None:
        log.info("streams %s: partitions revoked: %s", processor, partition_names(revoked))

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def assigned(_app: faust.App, assigned: set[Any], **_kwargs: Any) -> None:
        log.info("streams %s: partitions assigned: %s", processor, partition_names(assigned))
