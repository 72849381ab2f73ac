"""`herald demo`: the whole pipeline as separate processes, counted at the providers.

It starts what it needs, writes registrations through the outbox, waits until the
simulators received every e-ticket, reports lost, duplicated and latency from what the
simulators recorded (not from what the workers believe), and stops what it started.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from herald.examples.registrations.app import change_status, create_tables, register
from herald.infra.catalogs import open_catalog
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import RDKAFKA_LOG, client_pid
from herald.infra.kafka_views import COORDINATOR_NOT_READY, group_views
from herald.infra.processes import ProcessGroup, ServiceError, pid_alive
from herald.infra.progress import ProgressReporter, Update
from herald.infra.services import Endpoints, start_services, stop_services
from herald.infra.settings import Settings, child_environ
from herald.ops.bootstrap import prepare, replication_factor
from herald.ops.launch import HERALD_ARGV
from herald.ops.pipeline import pipeline_stages, stage_groups
from herald.producers.sessions import open_session, update_session
from herald.proving.catalogs import provider_environ
from herald.proving.demo_faults import (
    DEMO_SESSION,
    GATEWAY_REPORT_INTERVAL_S,
    IDLE_SESSION,
    FaultReport,
    demo_faults,
    finish_report,
    with_demo_retries,
)
from herald.proving.demo_hops import HOP_NAMES, HOPS, WRITER, ReadableWatcher, hop_latencies, p50_p99
from herald.proving.simulators.network import SimulatorNetwork
from herald.schemas.catalog import notification_topic, qualified
from herald.schemas.catalog_model import Catalog
from herald.schemas.tables import MessagingSession, OutboxRecord
from herald.streams.config import FAUST_PROCESSORS, READY_MESSAGE

CHANNELS = ("whatsapp", "email")  # the registrations example's

WRITER_THREADS = 4
# A paced registration may take this long (its three transactions on a full machine) before the
# writers fall behind their pace: with 4 threads at 100/s, a lifecycle over 40 ms held the whole
# pace back (71-74/s achieved in `herald bench e2e` on two cores).
PACED_LIFECYCLE_S = 0.2
# A paced run is measured after this long of the same pace (`warm_up`); in the first second
# of a run on a broker the demo had just started, p50 was 96 ms against 35 for the rest.
PACED_WARM_UP_S = 3.0
CATCH_UP_S = 120.0  # how long the stages may take to read what the burst left them
# Or no answer in time, while a new broker loads the offsets of many groups at once.
_COORDINATOR_NOT_READY = {*COORDINATOR_NOT_READY, KafkaError._TIMED_OUT}


def writer_threads(rate: float) -> int:
    """Threads writing registrations: 4 for a burst; for a pace, enough that registrations
    taking up to PACED_LIFECYCLE_S each still start on time."""
    return max(WRITER_THREADS, math.ceil(rate * PACED_LIFECYCLE_S))


@dataclass
class DemoResult:
    registrations: int
    written_events: int = 0
    published_events: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicates: int = 0
    idempotent_replays: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    elapsed_s: float = 0.0
    rate: float = 0.0  # registrations per second the writers were paced to; 0: unpaced
    faults: FaultReport | None = None
    caught_up_s: float | None = None  # every stage's groups at lag 0, this long after delivery
    behind: str = ""  # when they were not in time: which group, how far behind
    health: str = ""  # `herald health` at the end: its state and what it counted
    hops: dict[str, dict[str, float]] = field(default_factory=dict)  # per hop: p50_ms, p99_ms (demo_hops)
    accepted_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # channel -> registration -> ms
    written_s: float = 0.0  # how long the writers took: behind their pace when the machine is full
    commit_clock: bool = True  # latencies start at PostgreSQL's commit timestamps (else the rows' own)
    warm_up: int = 0  # registrations delivered before the measured ones (paced runs), not counted

    def summary_json(self) -> str:
        return json.dumps({"example": "registrations", "registrations": self.registrations,
                           "warm_up": self.warm_up,
                           "delivered": self.delivered,
                           "lost": self.lost, "duplicates": self.duplicates,
                           "p50_ms": round(self.p50_ms, 1), "p99_ms": round(self.p99_ms, 1),
                           "hops": {hop: [v["p50_ms"], v["p99_ms"]] for hop, v in self.hops.items()}})


def pipeline_env(settings: Settings, endpoints: Endpoints, network: SimulatorNetwork) -> dict[str, str]:
    """The environment of every child: our settings, resolved endpoints, simulator URLs.

    The replication factor is resolved here too: a child given the bootstrap address no longer
    looks at the embedded cluster, and would create Faust's topics with one replica on three.
    """
    environ = child_environ(settings, os.environ, kafka_bootstrap=endpoints.kafka_bootstrap,
                            database_url=endpoints.database_url,
                            replication_factor=replication_factor(settings))
    return {**environ, **provider_environ(network.whatsapp, network.email)}


def start_pipeline(group: ProcessGroup, settings: Settings, catalog: Catalog, bootstrap: str) -> None:
    """Relay, streams, session corrections and one delivery process per channel (the simulators
    already run); returns once every stage's consumer groups are ready and each Faust processor
    has recovered its tables. Each process spends a second or two of CPU starting; writes that
    began before that was over met eleven processes importing at once on two cores, and their
    first seconds of latency measured that."""
    group.start("relay", [*HERALD_ARGV, "relay"])
    group.start("streams", [*HERALD_ARGV, "streams"])
    for processor in FAUST_PROCESSORS:
        group.start(f"streams-{processor}", [*HERALD_ARGV, "streams", "--processor", processor])
    group.start("corrections", [*HERALD_ARGV, "corrections"])
    group.start("dlq-index", [*HERALD_ARGV, "dlq", "index"])
    group.start("history-index", [*HERALD_ARGV, "notifications", "index"])
    for channel in CHANNELS:
        group.start(f"deliver-{channel}", [*HERALD_ARGV, "deliver", "--channel", channel])
    stages = pipeline_stages(catalog, settings.namespace, settings.streams_app_id)
    wait_for_groups(bootstrap, [group_id for group_id, _topics in stage_groups(stages)], Deadline(90), group)
    # A stable group is not yet a working Faust processor: it first replays its changelogs,
    # a core's worth of CPU for seconds that the writes would otherwise share.
    group.wait_for_logged([f"streams-{p}" for p in FAUST_PROCESSORS], READY_MESSAGE, Deadline(120))


def create_example_tables(database_url: str) -> None:
    """The example app's own table (Herald's migrations make only Herald's)."""
    engine = sa.create_engine(database_url)
    try:
        create_tables(engine)
    finally:
        engine.dispose()


def open_demo_sessions(database_url: str, network: SimulatorNetwork) -> None:
    """The default workspace's WhatsApp sessions, connected on the first gateway instance: the
    one e-tickets go out from, and an idle one."""
    engine = sa.create_engine(database_url)
    try:
        for session_id in (DEMO_SESSION, IDLE_SESSION):
            network.place_session(network.whatsapp[0], session_id)
            with Session(engine) as session, session.begin():
                if session.get(MessagingSession, session_id) is None:
                    open_session(session, session_id=session_id, workspace_id="default",
                                 phone="+6281100000000", status="connected",
                                 gateway_instance=network.whatsapp[0])
                else:
                    update_session(session, session_id, status="connected",
                                   gateway_instance=network.whatsapp[0])
    finally:
        engine.dispose()


def wait_for_groups(bootstrap: str, group_ids: list[str], deadline: Deadline,
                    group: ProcessGroup, members: int | None = None) -> None:
    """Until every group is stable with each member holding partitions (and, when given,
    exactly `members` members)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    states: dict[str, str] = {}
    while True:
        group.check_alive()
        for group_id, future in admin.describe_consumer_groups(group_ids, request_timeout=30).items():
            states[group_id] = _group_readiness(future, members)
        if all(state == "ready" for state in states.values()):
            return
        if deadline.expired():
            raise ServiceError(f"consumer groups not ready in time: {states}")
        time.sleep(0.3)


def _group_readiness(future: Any, members: int | None = None) -> str:
    # Asked, not raised: a raised error's traceback and the future hold each other, and with
    # them the admin client, until a garbage collection destroys the client later, when its
    # broker may be gone; librdkafka's destroy then waited for good (a test run hung in it).
    error = future.exception()
    if isinstance(error, KafkaException):
        if error.args[0].retriable() or error.args[0].code() in _COORDINATOR_NOT_READY:
            return f"coordinator not ready ({error.args[0].name()})"
        raise error
    description = future.result()
    if description.state != ConsumerGroupState.STABLE or not description.members:
        return str(description.state)
    if members is not None and len(description.members) != members:
        return f"{len(description.members)} of {members} members"
    if not all(m.assignment.topic_partitions for m in description.members):
        return "members without partitions"
    if gone := stopped_members(description.members):
        return f"members of stopped processes still listed (pids {', '.join(map(str, gone))})"
    return "ready"


def stopped_members(members: list[Any]) -> list[int]:
    """The pids of `members` whose client id names a process that no longer runs. A static
    member of a process that stopped stays listed, with its partitions, until its session
    expires: after a broker restart the group even shows it stable."""
    return sorted(pid for member in members if (pid := client_pid(member.client_id)) and not pid_alive(pid))


def write_registrations(database_url: str, run_id: str, count: int, rate: float = 0.0,
                        on_written: Update | None = None) -> list[str]:
    """Register, upload payment, verify payment: three transactions per registration.

    `rate` > 0 paces them to that many registrations per second; 0 writes as fast as it can.
    `on_written` hears how many registrations are verified so far.
    """
    threads = writer_threads(rate)
    engine = sa.create_engine(database_url, pool_size=threads)
    ids = [f"REG-{run_id}-{i:05d}" for i in range(count)]
    started = time.monotonic()
    written = itertools.count(1)  # its next() is atomic in CPython: the writer threads share it

    def lifecycle(registration_id: str) -> None:
        if rate > 0:
            due = started + int(registration_id.rsplit("-", 1)[1]) / rate
            time.sleep(max(0.0, due - time.monotonic()))
        # Core on a connection, not the ORM: the writers stand in for upstream services on
        # other machines, and here they share the pipeline's two cores (see emit()).
        with engine.connect() as connection:
            for step in ("created", "payment_uploaded", "payment_verified"):
                with connection.begin():
                    if step == "created":
                        n = registration_id.rsplit("-", 1)[1]
                        register(connection, registration_id=registration_id,
                                 participant_name=f"Participant {n}", phone=f"+62812{n:0>7}",
                                 email=f"participant{n}@example.test")
                    else:
                        change_status(connection, registration_id, step)
        if on_written is not None:
            on_written(next(written))

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lifecycle, ids))
    finally:
        engine.dispose()
    return ids


def warm_up(database_url: str, network: SimulatorNetwork, run_id: str, rate: float, timeout_s: float,
            group: ProcessGroup) -> int:
    """Registrations at the paced rate for PACED_WARM_UP_S, delivered before the measured
    run begins and not counted in it: each stage's first records pay for its connections,
    caches and the freshly started broker's compiler, which no long-running pipeline pays."""
    count = math.ceil(rate * PACED_WARM_UP_S)
    write_registrations(database_url, f"w{run_id}", count, rate)  # "REG-w...": never this run's prefix
    wait_for_deliveries(network, f"REG-w{run_id}", count, Deadline(timeout_s), group)
    return count


def run_messages(network: SimulatorNetwork, channel: str, prefix: str,
                 template: str = "e_ticket") -> list[dict[str, Any]]:
    """What the channel's simulators accepted for this run's registrations, of one template."""
    return [m for m in network.messages(channel)
            if m["subject_id"].startswith(prefix) and m["template"] == template]


def wait_for_deliveries(network: SimulatorNetwork, prefix: str, expected: int,
                        deadline: Deadline, group: ProcessGroup, on_accepted: Update | None = None) -> None:
    """Poll the simulators (this run's own) until each channel has `expected` e-tickets;
    `on_accepted` hears how many messages they accepted in all."""
    while not deadline.expired():
        group.check_alive()
        if on_accepted is not None:
            on_accepted(sum(network.accepted(c) for c in CHANNELS))
        if min(network.accepted(c) for c in CHANNELS) >= expected:
            counts = [len({m["subject_id"] for m in run_messages(network, c, prefix)}) for c in CHANNELS]
            if min(counts) >= expected:
                return
        time.sleep(0.5)


def count_result(result: DemoResult, ids: list[str], network: SimulatorNetwork,
                 committed_ms: dict[str, float]) -> None:
    """Fill `result` from what the simulators recorded."""
    prefix = ids[0].rsplit("-", 1)[0]
    latencies = []
    for channel in CHANNELS:
        messages = run_messages(network, channel, prefix)
        stats = network.stats(channel)
        per_registration: dict[str, list[dict[str, Any]]] = {}
        for m in messages:
            per_registration.setdefault(m["subject_id"], []).append(m)
        result.delivered[channel] = sum(1 for i in ids if i in per_registration)
        result.lost += len(ids) - result.delivered[channel]
        result.duplicates += sum(len(ms) - 1 for ms in per_registration.values())
        result.idempotent_replays += int(stats["replays"])
        result.accepted_ms[channel] = {rid: min(m["accepted_at_ms"] for m in ms)
                                       for rid, ms in per_registration.items()}
        latencies += [at - committed_ms[rid] for rid, at in result.accepted_ms[channel].items()]
    if latencies:
        result.p50_ms, result.p99_ms = p50_p99(latencies)


@dataclass(frozen=True)
class Verified:
    """When each registration of a run was verified, by two clocks, and what is unpublished."""

    committed_ms: dict[str, float]  # the verifying transaction's commit (PostgreSQL's timestamp)
    changed_ms: dict[str, float]  # its status_changed_at: before the encode, the flush, the commit
    pending: int  # outbox rows of this run still unpublished
    commit_clock: bool  # False: track_commit_timestamp is off, and committed_ms is changed_ms


# The commit timestamp of the row's last writer (the verifying transaction), when PostgreSQL
# keeps them (track_commit_timestamp, on in the embedded server and in compose).
_VERIFIED = sa.text(
    "SELECT id, status_changed_at, CASE WHEN current_setting('track_commit_timestamp')::bool "
    "THEN pg_xact_commit_timestamp(xmin) END AS committed_at "
    "FROM registrations WHERE id LIKE :prefix AND status = 'payment_verified'")


def database_counts(database_url: str, prefix: str) -> Verified:
    engine = sa.create_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(_VERIFIED, {"prefix": f"{prefix}%"}).all()
            pending = session.scalar(sa.select(sa.func.count()).select_from(OutboxRecord)
                                     .where(OutboxRecord.message_key.startswith(prefix))) or 0
    finally:
        engine.dispose()
    changed = {r.id: _epoch_ms(r.status_changed_at) for r in rows}
    committed = {r.id: _epoch_ms(r.committed_at or r.status_changed_at) for r in rows}
    return Verified(committed, changed, int(pending), all(r.committed_at for r in rows))


def _epoch_ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


FaultInjector = Callable[[ProcessGroup, SimulatorNetwork], None]


def run_pipeline(settings: Settings, catalog: Catalog, endpoints: Endpoints, count: int, timeout_s: float,
                 inject_fault: FaultInjector | None = None, rate: float = 0.0,
                 faults: FaultReport | None = None) -> DemoResult:
    """Provision, start every stage as a process, write `count` registrations, count deliveries.

    `inject_fault(group, network)`, when given, runs in a thread alongside the writers
    (tests kill processes there); its exceptions are raised here.
    """
    run_id = uuid.uuid4().hex[:8]
    prefix = f"REG-{run_id}"
    run_dir = settings.home / "logs" / run_id
    network = SimulatorNetwork.plan(run_dir / "simulators", report_interval_s=GATEWAY_REPORT_INTERVAL_S)
    started = time.monotonic()
    result = DemoResult(registrations=count, rate=rate, faults=faults)
    progress = ProgressReporter("demo")
    with ProcessGroup(run_dir, pipeline_env(settings, endpoints, network)) as group, \
            ThreadPoolExecutor(1) as fault_thread:
        with progress.phase("starting the simulators and every stage"):
            network.start(group)
            create_example_tables(endpoints.database_url)
            open_demo_sessions(endpoints.database_url, network)
            start_pipeline(group, settings, catalog, endpoints.kafka_bootstrap)
        fault = fault_thread.submit(inject_fault, group, network) if inject_fault else None
        if rate > 0 and inject_fault is None:  # the faults count what the providers accepted
            result.warm_up = warm_up(endpoints.database_url, network, run_id, rate, timeout_s, group)
        # Without faults, a reader beside the pipeline splits the delivery hop (demo_hops), from
        # the request topics' ends after the warm-up; with faults, it would only add a second
        # voice to the broker's outage in the log.
        watcher = ReadableWatcher(endpoints.kafka_bootstrap, _request_topics(settings)) \
            if inject_fault is None else None
        with watcher or contextlib.nullcontext():
            with progress.phase("registrations verified", total=count) as written:
                writing = time.monotonic()
                ids = write_registrations(endpoints.database_url, run_id, count, rate, written)
                result.written_s = time.monotonic() - writing
            result.written_events = 3 * count
            if fault is not None:
                fault.result(timeout=timeout_s)
            with progress.phase("messages accepted by the providers (e-tickets and the rest)") as accepted:
                wait_for_deliveries(network, prefix, count, Deadline(timeout_s), group, accepted)
        delivered_at = time.monotonic()
        time.sleep(2.0)  # let any late repeat arrive before counting duplicates
        verified = database_counts(endpoints.database_url, prefix)
        result.published_events = result.written_events - verified.pending
        result.commit_clock = verified.commit_clock
        count_result(result, ids, network, verified.committed_ms)
        result.hops = hop_latencies(endpoints.kafka_bootstrap, settings.namespace, CHANNELS,
                                    verified.committed_ms, result.accepted_ms,
                                    watcher.readable_ms if watcher else None, verified.changed_ms)
        if faults is not None:
            finish_report(faults, [network.stats(c) for c in CHANNELS], endpoints.database_url)
        with progress.phase("every stage catching up"):
            wait_for_stages(result, settings, catalog, endpoints.kafka_bootstrap, delivered_at, group)
        result.health = health_line(settings, catalog, endpoints)
    result.elapsed_s = time.monotonic() - started
    return result


def _request_topics(settings: Settings) -> list[str]:
    return [qualified(notification_topic(channel), settings.namespace) for channel in CHANNELS]


def run_demo(settings: Settings, count: int, timeout_s: float, rate: float = 0.0,
             faults: bool = True) -> DemoResult:
    _endpoints, started = start_services(settings)
    try:
        if faults:
            settings = with_demo_retries(settings)
        catalog = open_catalog(settings.catalog, os.environ)
        endpoints = prepare(settings, catalog)
        if not faults:
            return run_pipeline(settings, catalog, endpoints, count, timeout_s, rate=rate)
        report = FaultReport()
        return run_pipeline(settings, catalog, endpoints, count, timeout_s,
                            inject_fault=demo_faults(count, report), rate=rate, faults=report)
    finally:
        stop_services(settings, only=started)


def wait_for_stages(result: DemoResult, settings: Settings, catalog: Catalog, bootstrap: str,
                    delivered_at: float, group: ProcessGroup) -> None:
    """Until every stage's consumer groups are at lag 0: under the burst the stream stages
    trail the deliveries, and stopping them behind would leave the next run a backlog."""
    deadline = Deadline(CATCH_UP_S)
    groups = stage_groups(pipeline_stages(catalog, settings.namespace, settings.streams_app_id))
    while True:
        group.check_alive()
        behind = {g: view.lag for g, view in group_views(bootstrap, groups).items() if view.lag}
        if not behind:
            result.caught_up_s = time.monotonic() - delivered_at
            return
        if deadline.expired():
            result.behind = ", ".join(f"{g} {lag} behind" for g, lag in sorted(behind.items()))
            return
        time.sleep(1.0)


def health_line(settings: Settings, catalog: Catalog, endpoints: Endpoints) -> str:
    """What `herald health` says once the run is over (dead letters as the indexer saw them)."""
    from herald.ops.health import health_report

    engine = sa.create_engine(endpoints.database_url, poolclass=sa.pool.NullPool)
    try:
        report = health_report(settings, catalog, endpoints.kafka_bootstrap, engine)
    finally:
        engine.dispose()
    dead = sum(report.figures.get("dlq_open", {}).values())
    outbox = report.figures.get("outbox", {}).get("rows", "?")
    failed = "".join(f"; {check.name}: {check.detail}" for check in report.checks if check.state == "fail")
    return f"{report.state}: {dead} dead letters open, outbox {outbox} rows{failed}"


def print_report(result: DemoResult) -> None:
    console = Console()
    table = Table("measure", "value", title="Herald demo: counted at the provider simulators")
    achieved = f", {result.registrations / result.written_s:.0f}/s achieved" if result.written_s else ""
    pace = f"{result.rate:g}/s{achieved}" if result.rate else f"unpaced, {WRITER_THREADS} writer threads"
    if result.warm_up:
        table.add_row("warm-up before the measured run (not counted)", f"{result.warm_up} registrations")
    table.add_row("registrations verified", f"{result.registrations} ({pace})")
    table.add_row("events written (outbox)", str(result.written_events))
    table.add_row("events published (acknowledged by Kafka)", str(result.published_events))
    for channel, delivered in result.delivered.items():
        table.add_row(f"e-tickets delivered, {channel}", f"{delivered} / {result.registrations}")
    table.add_row("lost", str(result.lost))
    table.add_row("duplicates (same person, same e-ticket, twice)", str(result.duplicates))
    table.add_row("repeats dropped by Idempotency-Key", str(result.idempotent_replays))
    for measure, value in result.faults.rows() if result.faults else []:
        table.add_row(measure, value)
    table.add_row("latencies start at", "the verifying commit (PostgreSQL's commit timestamp)"
                  if result.commit_clock else "the rows' status_changed_at (track_commit_timestamp is off)")
    table.add_row("latency verify-commit -> provider, p50", f"{result.p50_ms:.0f} ms")
    table.add_row("latency verify-commit -> provider, p99", f"{result.p99_ms:.0f} ms")
    for hop, figures in result.hops.items():
        indent = "  hop: " if hop in HOPS else "" if hop == WRITER else "    "
        table.add_row(f"{indent}{HOP_NAMES[hop]}, p50 / p99",
                      f"{figures['p50_ms']:.0f} / {figures['p99_ms']:.0f} ms")
    caught_up = (f"{result.caught_up_s:.1f} s after the last e-ticket" if result.caught_up_s is not None
                 else f"not within {CATCH_UP_S:.0f} s: {result.behind}")
    table.add_row("every stage caught up (lag 0)", caught_up)
    table.add_row("herald health at the end", result.health)
    table.add_row("wall time", f"{result.elapsed_s:.1f} s")
    console.print(table)
    print(result.summary_json(), flush=True)
