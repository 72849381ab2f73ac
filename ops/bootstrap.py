"""The composition root: build each stage from settings and run it."""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import threading
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer, Producer

from herald.infra.exit_deadline import arm_exit_deadline, serve_http
from herald.infra.kafka_io import (
    consumer_config,
    membership_config,
    off_path_fetch,
    process_client_id,
    producer_config,
)
from herald.infra.kafka_views import group_views
from herald.infra.logs import log_start, log_stop
from herald.infra.processes import ServiceError, lower_priority
from herald.infra.provisioning import provision_topics, topic_names
from herald.infra.schema_registry import (
    RegistrySchemas,
    connect_schema_registry,
    register_and_connect,
    registry_client,
)
from herald.infra.services import (
    Endpoints,
    check_database,
    check_kafka,
    embedded_kafka,
    embedded_postgres,
    embedded_registry,
    resolve_database_url,
    resolve_endpoints,
    resolve_registry_url,
    start_services,
)
from herald.infra.settings import Settings
from herald.ops.delivery_process import DeliveryProcess, DeliveryReport
from herald.ops.pipeline import stream_inputs, stream_outputs
from herald.ops.rejoin import run_rejoining
from herald.producers.ingest import IngestConfig
from herald.producers.ingest_events import event_kinds
from herald.producers.leases import lease_holders
from herald.producers.outbox import OUTBOX_SHARDS, outbox_backlog
from herald.producers.relay import Relay, RelayConfig, RelayStats
from herald.schemas.catalog import (
    CORRECTIONS_STAGE,
    DELIVERY_STAGE,
    DLQ_INDEX_STAGE,
    GATEWAY_OBSERVATIONS,
    NOTIFICATION_STATUS,
    SESSION_CORRECTIONS,
    consumer_group,
    dead_letter_topic,
    dead_letter_topics,
    delivery_topics,
    notification_topic,
    orphaned_channel_topics,
    qualified,
    topic_catalog,
)
from herald.schemas.catalog_model import Catalog
from herald.schemas.migrations import migrate
from herald.schemas.tables import OutboxRecord
from herald.streams.config import StreamsConfig

log = logging.getLogger(__name__)


def _names(settings: Settings, *topics: str) -> list[str]:
    """Catalog names as on the broker, for log lines."""
    return [qualified(topic, settings.namespace) for topic in topics]


def prepare(settings: Settings, catalog: Catalog) -> Endpoints:
    """Start what is needed, bring the schema up to date, create missing topics (refusing a
    catalog that would orphan unread records of a channel it no longer declares), register
    their schemas (refusing a change the registry finds incompatible)."""
    endpoints, _started = start_services(settings)
    migrate(endpoints.database_url)
    refuse_orphaned_channels(endpoints.kafka_bootstrap, catalog, settings.namespace)
    specs = topic_catalog(catalog, settings.namespace)
    provision_topics(endpoints.kafka_bootstrap, specs, replication_factor(settings))
    register_and_connect(endpoints.schema_registry_url, specs)
    return endpoints


def use_schema_registry(settings: Settings, catalog: Catalog) -> RegistrySchemas:
    """The codec on the schema registry, for a pipeline stage: fails fast, naming the registry
    and how to start it, when it does not answer."""
    return connect_schema_registry(registry_client(resolve_registry_url(settings)),
                                   topic_catalog(catalog, settings.namespace))


def use_schema_registry_if_up(settings: Settings, catalog: Catalog) -> None:
    """The same for an ops command or the API, which answer while the registry is away: then
    what they read shows as undecodable, and a line says why."""
    try:
        use_schema_registry(settings, catalog)
    except ServiceError as exc:
        log.warning("records are shown undecoded: %s", exc)


def refuse_orphaned_channels(bootstrap: str, catalog: Catalog, namespace: str) -> None:
    """A channel the catalog no longer declares (renamed or removed) whose topics hold records
    its workers or the DLQ index have not read yet: ServiceError naming them and what to do.
    Read to the end, its topics are only left behind, which is logged."""
    orphaned = orphaned_channel_topics(topic_names(bootstrap), catalog, namespace)
    if not orphaned:
        return
    readers: dict[str, list[str]] = {}  # group -> the orphaned topics it reads
    for topic in (t for topics in orphaned.values() for t in topics):
        readers.setdefault(_reader_of(topic, namespace), []).append(topic)
    views = group_views(bootstrap, [(group, topics) for group, topics in readers.items()])
    pending = {", ".join(topics): views[group].lag for group, topics in readers.items() if views[group].lag}
    if pending:
        channels = ", ".join(sorted(orphaned))
        held = ", ".join(f"{topic} ({lag} unread)" for topic, lag in sorted(pending.items()))
        raise ServiceError(
            f"the catalog no longer declares channel(s) {channels}, whose topics hold records not yet "
            f"read: {held}. A renamed channel starts on new topics, so these would be orphaned: deliver "
            "them first with the catalog that declared the channel (`herald deliver --channel NAME "
            "--drain`, and `herald dlq index --drain`), then switch catalogs")
    log.warning("the catalog no longer declares channel(s) %s; their topics hold no unread record and "
                "are left as they are: %s", ", ".join(sorted(orphaned)),
                ", ".join(t for topics in orphaned.values() for t in topics))


def _reader_of(topic: str, namespace: str) -> str:
    """The consumer group that reads a channel's topic (as on the broker): the DLQ index for its
    dead letters, its delivery workers for the rest."""
    if topic.endswith(".dlq"):
        return consumer_group(DLQ_INDEX_STAGE, "dlq", namespace)
    return consumer_group(DELIVERY_STAGE, topic.removeprefix(f"{namespace}." if namespace else ""), namespace)


def replication_factor(settings: Settings) -> int:
    """The catalog's replicas: the setting on a configured Kafka, the embedded cluster's own
    (1 or 3) otherwise, so one catalog provisions one broker or three."""
    if settings.kafka_bootstrap is not None:
        return settings.replication_factor
    state = embedded_kafka(settings).state()
    return state.replication_factor if state is not None else settings.replication_factor


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    rows = []
    if settings.kafka_bootstrap:
        rows.append(("kafka", "configured", settings.kafka_bootstrap))
    else:
        kafka = embedded_kafka(settings).state()
        rows.append(("kafka", f"embedded {settings.kafka_version}" if kafka else "stopped",
                     kafka.bootstrap if kafka else "-"))
    if settings.database_url:
        rows.append(("postgres", "configured", sa.make_url(settings.database_url)
                     .render_as_string(hide_password=True)))
    else:
        pg = embedded_postgres(settings).state()
        rows.append(("postgres", "embedded" if pg else "stopped", pg.url if pg else "-"))
    if settings.schema_registry_url:
        rows.append(("schema registry", "configured", settings.schema_registry_url))
    else:
        registry = embedded_registry(settings).state()
        rows.append(("schema registry", f"embedded Apicurio {settings.registry_version}" if registry
                     else "stopped", registry.url if registry else "-"))
    return rows


def reachable_endpoints(settings: Settings, need_database: bool = True) -> Endpoints:
    """For long-running processes: fail fast, naming the unreachable service and the fix."""
    endpoints = resolve_endpoints(settings, need_database=need_database)
    check_kafka(endpoints.kafka_bootstrap)
    if need_database:
        check_database(endpoints.database_url)
    return endpoints


def settle_garbage_collector() -> None:
    """Keep the collector off what lives for the whole process, and let it run less often.

    A relay batch keeps thousands of rows alive across young collections, so they reach the
    oldest generation and trigger full collections over every object of every imported
    module. Freezing those and raising the young threshold cut the relay's CPU per event by
    about 30 % (200,000-event drains: 5.0-5.7 s of relay CPU before, 3.4-3.7 s after).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def run_relay(settings: Settings, stop: threading.Event) -> RelayStats:
    endpoints = reachable_endpoints(settings)
    settle_garbage_collector()
    # NullPool: a shard lease is a lock on the relay's own connection, never on a pooled one.
    # Its name says which process holds it (`herald status`).
    engine = sa.create_engine(endpoints.database_url, poolclass=sa.NullPool, connect_args={
        "application_name": f"herald-relay-{os.getpid()}"})
    if not sa.inspect(engine).has_table(OutboxRecord.__tablename__):
        engine.dispose()
        raise ServiceError("the database has no outbox table: run `herald up` (it migrates) first")
    relay = Relay(engine, lambda: Producer(producer_config(endpoints.kafka_bootstrap,
                                                           settings.relay_flush_timeout_s)),
                  relay_config(settings))
    from herald.ops.metrics import RelayCollector, serve_metrics

    serve_metrics(settings.metrics_port, settings.metrics_host, RelayCollector(relay))
    log_start(log, "relay", consumes=[f"the outbox ({OUTBOX_SHARDS} shards, leased)"],
              produces=["each row's own topic"])
    try:
        stats = relay.run(stop)
    finally:
        engine.dispose()
    log_stop(log, "relay", stats)
    return stats


def outbox_status(settings: Settings) -> dict[str, Any]:
    """The backlog and who leases which shards: for operators, health checks and metrics.

    Needs only the database, so it answers while Kafka is down, which is when it matters.
    """
    engine = sa.create_engine(resolve_database_url(settings), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            backlog = outbox_backlog(conn)
            holders = lease_holders(conn)
    finally:
        engine.dispose()
    return {**backlog.as_dict(), "relays": len(holders), "shards": OUTBOX_SHARDS,
            "shards_leased": sum(len(holder.shards) for holder in holders),
            "leases": {str(holder.pid): list(holder.shards) for holder in holders}}


def relay_config(settings: Settings) -> RelayConfig:
    return RelayConfig(namespace=settings.namespace, batch_size=settings.relay_batch_size,
                       claims_per_commit=settings.relay_claims_per_commit,
                       flush_timeout_s=settings.relay_flush_timeout_s,
                       poll_interval_s=settings.relay_poll_interval_s,
                       lease_interval_s=settings.relay_lease_interval_s,
                       shutdown_timeout_s=settings.relay_shutdown_timeout_s)


def run_ingest(settings: Settings, catalog: Catalog) -> None:
    """The ingest API needs only the database: Kafka being down must never fail a request."""
    from herald.producers.ingest import create_ingest_app

    secrets = tuple(s.strip() for s in (settings.ingest_secrets or "").split(",") if s.strip())
    if not secrets:
        raise ServiceError("HERALD_INGEST_SECRETS is not set: the ingest API never accepts unsigned "
                           "requests; set one secret (or several, comma-separated, while rotating)")
    database_url = resolve_database_url(settings)
    check_database(database_url)
    use_schema_registry(settings, catalog)
    engine = sa.create_engine(database_url, pool_pre_ping=True, pool_size=10)
    app = create_ingest_app(engine, IngestConfig(
        kinds=event_kinds(catalog), secrets=secrets, tolerance_s=settings.ingest_tolerance_s,
        max_body_bytes=settings.ingest_max_body_bytes,
        idempotency_ttl_s=settings.ingest_idempotency_ttl_s))
    log_start(log, "ingest", consumes=[f"POST /v1/events on {settings.ingest_host}:{settings.ingest_port}"],
              produces=["the outbox"])
    try:
        serve_http(app, "ingest", settings.ingest_host, settings.ingest_port, settings.shutdown_timeout_s,
                   log_level=settings.log_level.lower())
    finally:
        engine.dispose()


def streams_config(settings: Settings, catalog: Catalog) -> StreamsConfig:
    """The stream processors' config; the missing detector's SLAs come from the catalog."""
    return StreamsConfig(namespace=settings.namespace, app_id=settings.streams_app_id,
                         data_dir=settings.home / "streams-data",
                         replication_factor=settings.replication_factor,
                         commit_interval_s=settings.streams_commit_interval_s,
                         session_timeout_s=settings.kafka_session_timeout_s, catalog=catalog,
                         missing_scan_interval_s=settings.missing_scan_interval_s,
                         session_grace_s=settings.session_grace_s,
                         session_resync_interval_s=settings.session_resync_interval_s,
                         status_flush_interval_s=settings.status_stats_flush_interval_s)


def run_router_stage(settings: Settings, catalog: Catalog, stop: threading.Event) -> None:
    """The router: not a Faust app but a transactional loop on confluent-kafka (it holds no state)."""
    from herald.ops.router_process import build_router, run_router

    endpoints = reachable_endpoints(settings, need_database=False)
    use_schema_registry(settings, catalog)
    settle_garbage_collector()
    produces = _names(settings, *stream_outputs(catalog)["router"])

    def route_once() -> object:
        return run_router(build_router(settings, catalog, endpoints.kafka_bootstrap), stop, produces)

    run_rejoining(route_once, "the router", stop)


def run_streams(settings: Settings, catalog: Catalog, processor: str) -> None:
    """One Faust processor (missing, sessions, status); the router is `run_router_stage`."""
    import faust

    from herald.streams.app import changelog_topics, create_app

    # Off the notifications' path, so they yield the cores to it: beside them the router ran at
    # 0.18-0.28 of the decoding rate instead of 0.11-0.12, and the paced p99 was 333-385 ms
    # instead of 485-555 (A/B on 2 cores, 2026-12-04, docs/proof.md).
    lower_priority(settings.streams_monitor_nice)
    endpoints = reachable_endpoints(settings, need_database=False)
    use_schema_registry(settings, catalog)
    # Its changelog and repartition topics get the replicas the catalog's topics get.
    replicated = dataclasses.replace(settings, replication_factor=replication_factor(settings))
    app = create_app(streams_config(replicated, catalog), endpoints.kafka_bootstrap, processor)
    provision_topics(endpoints.kafka_bootstrap, changelog_topics(app), replicated.replication_factor)
    # Faust (mode) clears the root logger's handlers: ours go back as they were (text or
    # JSON, with request and trace ids), and its own dictConfig changes nothing.
    app.conf.loghandlers = list(logging.root.handlers)
    class BoundedWorker(faust.Worker):  # type: ignore[misc]
        def _on_sigterm(self) -> None:
            arm_exit_deadline(settings.shutdown_timeout_s, "SIGTERM")
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            arm_exit_deadline(settings.shutdown_timeout_s, "SIGINT")
            super()._on_sigint()

    worker = BoundedWorker(app, loglevel=settings.log_level, quiet=True,
                           logging_config={"version": 1, "incremental": True})
    ungrouped = (GATEWAY_OBSERVATIONS,) if processor == "sessions" else ()  # every worker reads all of it
    log_start(log, f"streams {processor}",
              consumes=_names(settings, *stream_inputs(catalog)[processor], *ungrouped),
              produces=_names(settings, *stream_outputs(catalog)[processor]), groups=[app.conf.id])
    try:
        worker.execute_from_commandline()
    finally:
        log_stop(log, f"streams {processor}")


def run_delivery(settings: Settings, catalog: Catalog, channel: str, stop: threading.Event,
                 drain: bool = False, tiers: tuple[int, ...] | None = None) -> DeliveryReport:
    """Workers of CHANNEL: its request topic (tier 0) and each retry tier, unless `tiers` picks."""
    endpoints = reachable_endpoints(settings, need_database=False)
    use_schema_registry(settings, catalog)
    settle_garbage_collector()
    from herald.ops.metrics import DeliveryCollector, serve_metrics

    process = DeliveryProcess(settings, catalog, endpoints.kafka_bootstrap, channel, tiers)
    serve_metrics(settings.metrics_port, settings.metrics_host,
                  DeliveryCollector(channel, lambda: dict(process.handlers)))
    corrections = [SESSION_CORRECTIONS] if catalog.channels[channel].kind == "whatsapp-gateway" else []
    produces = [NOTIFICATION_STATUS, *delivery_topics(channel)[1:],
                dead_letter_topic(notification_topic(channel)), *corrections]
    log_start(log, f"deliver {channel}", consumes=_names(settings, *process.topics),
              produces=_names(settings, *produces),
              groups=[consumer_group(DELIVERY_STAGE, t, settings.namespace) for t in process.topics])
    report = process.run(stop, drain)
    log_stop(log, f"deliver {channel}", report.totals())
    return report


def run_corrections(settings: Settings, catalog: Catalog, stop: threading.Event) -> dict[str, Any]:
    """Apply what Kafka learned about sessions to the database (through the outbox): the
    corrections delivery workers found, and the session reconciler's mismatches. One consumer
    group per topic, each on a thread of its own; returns each one's counters."""
    import httpx

    from herald.consumers.corrections import CorrectionApplier, Corrections, InstanceCorrections
    from herald.consumers.mismatches import MismatchCorrections, ReconnectPolicy

    endpoints = reachable_endpoints(settings)
    use_schema_registry(settings, catalog)
    engine = sa.create_engine(endpoints.database_url, pool_pre_ping=True)
    client = httpx.Client(timeout=10.0)
    handlers: list[Corrections] = [
        InstanceCorrections(),
        MismatchCorrections(engine, ReconnectPolicy(settings.session_auto_reconnect_workspaces), client)]

    def apply_once(handler: Corrections) -> Any:
        group = consumer_group(CORRECTIONS_STAGE, handler.topic, settings.namespace)
        consumer = Consumer(consumer_config(endpoints.kafka_bootstrap, group, **membership_config(
            settings.kafka_session_timeout_s, settings.instance_id, process_client_id("corrections")),
            **off_path_fetch()))
        producer = Producer(producer_config(endpoints.kafka_bootstrap, 30))  # for dead letters
        return CorrectionApplier(consumer, producer, engine, settings.namespace, handler).run(stop)

    threads = [threading.Thread(target=run_rejoining, name=h.topic,
                                args=(functools.partial(apply_once, h), f"corrections {h.topic}", stop))
               for h in handlers]
    log_start(log, "corrections", consumes=_names(settings, *(h.topic for h in handlers)),
              produces=["the outbox (session events)", *_names(settings, *(dead_letter_topic(h.topic)
                                                                           for h in handlers))],
              groups=[consumer_group(CORRECTIONS_STAGE, h.topic, settings.namespace) for h in handlers])
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        client.close()
        engine.dispose()
    stats = {handler.topic: handler.stats for handler in handlers}
    log_stop(log, "corrections", stats)
    return stats


def database_engine(settings: Settings) -> sa.Engine:
    """An engine for a short command that needs only the database (ops commands answer while
    Kafka is down: a replay goes through the outbox). A database that does not answer is a
    clear error naming it, not a traceback."""
    url = resolve_database_url(settings)
    check_database(url)
    return sa.create_engine(url, pool_pre_ping=True)


def run_dlq_index(settings: Settings, catalog: Catalog, stop: threading.Event, drain: bool = False) -> Any:
    """Index every dead-letter record into the database until stopped (or, with drain, caught up)."""
    from herald.consumers.dead_letter_index import INDEX_STAGE, DeadLetterIndexer

    endpoints = reachable_endpoints(settings)
    use_schema_registry(settings, catalog)
    engine = sa.create_engine(endpoints.database_url, pool_pre_ping=True)
    group = consumer_group(INDEX_STAGE, "dlq", settings.namespace)

    def index_once() -> Any:
        # A drain is a one-off run beside the long-lived indexer: never under its instance id.
        consumer = Consumer(consumer_config(endpoints.kafka_bootstrap, group, **membership_config(
            settings.kafka_session_timeout_s, "" if drain else settings.instance_id,
            process_client_id("dlq-index")), **off_path_fetch()))
        indexer = DeadLetterIndexer(consumer, engine, settings.namespace, dead_letter_topics(catalog))
        return indexer.run(stop, drain)

    log_start(log, "dlq index", consumes=_names(settings, *dead_letter_topics(catalog)),
              produces=["the dead_letters table"], groups=[group])
    try:
        stats = run_rejoining(index_once, "the dlq index", stop)
    finally:
        engine.dispose()
    log_stop(log, "dlq index", stats)
    return stats


def kafka_if_known(settings: Settings) -> str | None:
    """The configured or embedded broker's address; None when neither is there (the ops
    commands and API then report Kafka as unreachable instead of failing)."""
    try:
        return resolve_endpoints(settings, need_database=False).kafka_bootstrap
    except ServiceError:
        return None


def read_health(settings: Settings, catalog: Catalog) -> Any:
    """The health report: what is unreachable or not running is reported, never raised."""
    from herald.ops.health import health_report

    bootstrap = kafka_if_known(settings)
    use_schema_registry_if_up(settings, catalog)
    try:
        engine: sa.Engine | None = sa.create_engine(
            resolve_database_url(settings), poolclass=sa.NullPool, connect_args={"connect_timeout": 5})
    except ServiceError:
        engine = None
    try:
        return health_report(settings, catalog, bootstrap, engine)
    finally:
        if engine is not None:
            engine.dispose()


def ops_api_app(settings: Settings, catalog: Catalog) -> Any:
    """The ops API as an ASGI app. Kafka may be down: its parts then answer 503."""
    from herald.ops.ops_api import Wiring, create_ops_api

    bootstrap = kafka_if_known(settings)
    use_schema_registry_if_up(settings, catalog)
    engine = sa.create_engine(resolve_database_url(settings), pool_pre_ping=True,
                              connect_args={"connect_timeout": 5})
    return create_ops_api(Wiring(settings, catalog, engine, bootstrap))


def run_api(settings: Settings, catalog: Catalog) -> None:
    check_database(resolve_database_url(settings))
    log_start(log, "api", consumes=[f"HTTP on {settings.api_host}:{settings.api_port} (ops API, console, "
                                    "/metrics)"], produces=["the outbox (replays, resends)", "the audit log"])
    serve_http(ops_api_app(settings, catalog), "api", settings.api_host, settings.api_port,
               settings.shutdown_timeout_s, log_level="warning", access_log=False)
