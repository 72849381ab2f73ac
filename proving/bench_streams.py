"""`herald bench streams`: the Faust processors' throughput, and how late a missing e-ticket alerts.

Phases, in a namespace of the bench's own (its topics are deleted when it ends):

1. Baseline: a plain consumer (confluent-kafka, no decoding) reads a backlog of registration
   events from `registrations.events`: the raw consume rate of that topic in this run.
2. Throughput: the router and the missing-notification detector work through that backlog,
   and the session reconciler through as many session events on `sessions.events`, one
   Faust worker each, all three side by side; each one's rate comes from its group's
   committed offsets, polled (from its first commit to its last). Before that, each one alone
   (`--alone`): the same backlog under a group of its own, one processor running at a time, so
   its rate is set by its own cost and not by its share of the cores; the decoding baseline
   runs alone too.
3. Alert delay: verified payments at a steady rate, with an e-ticket SLA of a few seconds;
   every other one gets both e-tickets `sent` one second later. The delay is from a missing
   e-ticket's deadline to its alert arriving at a consumer of `notifications.missing`. An
   alert for a delivered e-ticket, or a second alert for one key, is a false alert.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.catalogs import open_catalog
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import RDKAFKA_LOG, Record, produce_confirmed, producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.provisioning import delete_namespace_topics, provision_topics
from herald.infra.schema_registry import delete_subjects, register_and_connect, registry_client
from herald.infra.services import resolve_registry_url
from herald.infra.settings import Settings, child_environ
from herald.ops.launch import HERALD_ARGV
from herald.ops.pipeline import streams_app_id
from herald.proving.bench_relay import percentile
from herald.proving.catalogs import write_catalog
from herald.proving.cpu_usage import cpu_of
from herald.schemas.catalog import (
    MISSING_NOTIFICATIONS,
    NOTIFICATION_STATUS,
    SESSION_EVENTS,
    qualified,
    topic_catalog,
)
from herald.schemas.codec import decode_expecting, encode
from herald.schemas.ids import notification_id

# Each processor measured, and the input topic its backlog is on.
MEASURED = {"router": REGISTRATION_EVENTS, "missing": REGISTRATION_EVENTS, "sessions": SESSION_EVENTS}
PROCESSOR_NAMES = {"router": "router, a confluent-kafka loop",
                   "missing": "missing detector, one Faust worker",
                   "sessions": "session reconciler, one Faust worker"}
# Each processor's events/s as a share of the decoding consume rate, the goals of issue 21.
GOALS = {"router": 0.15, "missing": 0.05, "sessions": 0.05}
ALONE_SUFFIX = "alone"  # the groups of the processors' solo runs: `herald-streams-alone...`
DELIVERED_AFTER_S = 1.0  # every other payment's e-tickets are sent this long after it


@dataclass(frozen=True)
class StreamsBench:
    settings: Settings  # namespaced, with the bench's catalog
    bootstrap: str
    group: ProcessGroup
    sla_s: float  # the e-ticket's, in the bench's catalog

    def topic(self, name: str) -> str:
        return qualified(name, self.settings.namespace)

    def processor_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each processor's process, by the processor's name."""
        return cpu_of({p.pid: name.removeprefix("streams-") for name, p in self.group.processes.items()})


def registration_event(registration_id: str, status: str, occurred_at: datetime | None = None) -> bytes:
    return encode("herald.RegistrationEvent", {
        "event_id": str(uuid.uuid4()), "registration_id": registration_id, "status": status,
        "participant_name": "Bench", "phone": "+628110000", "email": "bench@example.test",
        "occurred_at": occurred_at or datetime.now(UTC), "workspace_id": "default"})


def sent_status(registration_id: str, channel: str) -> tuple[bytes, bytes]:
    now = datetime.now(UTC)
    nid = notification_id(registration_id, "e_ticket", channel)
    return nid.encode(), encode("herald.NotificationStatus", {
        "notification_id": nid, "subject_id": registration_id, "notification_type": "e_ticket",
        "channel": channel, "status": "sent", "attempts": 1, "provider_message_id": "bench",
        "error": None, "error_class": None, "due_at": None, "gateway_instance": None,
        "source_occurred_at": now, "occurred_at": now})


def session_event(session_id: str) -> bytes:
    return encode("herald.SessionEvent", {
        "event_id": str(uuid.uuid4()), "session_id": session_id, "workspace_id": "default", "phone": None,
        "status": "connected", "gateway_instance": "http://bench-gateway", "metadata": {},
        "occurred_at": datetime.now(UTC)})


def preload(bench: StreamsBench, count: int) -> None:
    """`count` registrations created (welcome due in an hour: none alerts during the bench), and
    `count` sessions opened (their grace period is an hour: none is judged during the bench).
    Twice `count` records outgrow the producer's local queue while a new broker still loads its
    coordinators: produce_confirmed waits for room instead of failing with BufferError."""
    producer = Producer(producer_config(bench.bootstrap, 60))
    produce_confirmed(producer, _backlog(bench, count), Deadline(120))


def _backlog(bench: StreamsBench, count: int) -> Iterator[Record]:
    for n in range(count):
        key = f"BENCH-{n}"
        yield bench.topic(REGISTRATION_EVENTS), key.encode(), registration_event(key, "created"), {}
        yield bench.topic(SESSION_EVENTS), key.encode(), session_event(key), {}


def consume_eps(bench: StreamsBench, count: int, decode: bool = False) -> float:
    """A plain consumer from the start of the backlog to its end. Raw, the topic's baseline;
    decoding each record as the processors do (Python, fastavro), the part of their cost no
    stream processor in Python avoids."""
    topic = bench.topic(REGISTRATION_EVENTS)
    consumer = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": "bench-raw", "logger": RDKAFKA_LOG,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        # Connected already (the metadata request above), so the clock covers fetching only.
        seen, started = 0, time.perf_counter()
        while seen < count:
            for message in consumer.consume(10_000, 1.0):
                if message.error() is None:
                    if decode:
                        decode_expecting(message.value(), "herald.RegistrationEvent")
                    seen += 1
        return count / (time.perf_counter() - started)
    finally:
        consumer.close()


def committed(admin: AdminClient, group_id: str, topic: str) -> int:
    request = ConsumerGroupTopicPartitions(group_id)
    result = admin.list_consumer_group_offsets([request])[group_id].result()
    return sum(max(tp.offset, 0) for tp in result.topic_partitions or [] if tp.topic == topic)


class BacklogTracker:
    """Each processor's progress through the backlog: its rate and its process's CPU per event,
    each from its own first commit to its last (the router may be done before a Faust worker
    has joined its group). A backlog one batch takes whole (`--events` small) is timed from
    the last look that found nothing committed instead."""

    def __init__(self, bench: StreamsBench, count: int, names: tuple[str, ...]) -> None:
        self._bench, self._count, self._names = bench, count, names
        # name -> (when, committed, its process's CPU seconds) at its first commit
        self._first: dict[str, tuple[float, int, float]] = {}
        self._idle: dict[str, tuple[float, float]] = {}  # name -> (when, CPU) last seen at 0
        self.rates: dict[str, float] = {}
        self._cpu_ms: dict[str, float] = {}

    @property
    def done(self) -> bool:
        return len(self.rates) == len(self._names)

    def observe(self, progress: dict[str, int], now: float) -> None:
        cpu = self._bench.processor_cpu()
        for name, done in progress.items():
            if name in self.rates:
                continue
            if done <= 0:
                self._idle[name] = (now, cpu.get(name, 0.0))
                continue
            if name not in self._first:
                self._first[name] = (now, done, cpu.get(name, 0.0))
            if done >= self._count:
                started, already, cpu_then = self._first[name]
                if already >= self._count and name in self._idle:  # all in one batch
                    (started, cpu_then), already = self._idle[name], 0
                measured = max(self._count - already, 1)
                self.rates[name] = measured / max(now - started, 1e-3)
                self._cpu_ms[name] = (cpu.get(name, 0.0) - cpu_then) * 1000 / measured

    def results(self) -> dict[str, Any]:
        results: dict[str, Any] = {f"{name}_eps": eps for name, eps in self.rates.items()}
        results["cpu_ms_per_event"] = {name: round(self._cpu_ms[name], 3) for name in self._names}
        return results


def processing_rates(bench: StreamsBench, count: int, names: tuple[str, ...] = tuple(MEASURED),
                     timeout_s: float = 600) -> dict[str, Any]:
    """Each of `names`' events/s over the backlog, from its group's committed offsets."""
    admin = AdminClient({"bootstrap.servers": bench.bootstrap, "logger": RDKAFKA_LOG})
    groups = {name: streams_app_id(bench.settings, name) for name in names}
    tracker, deadline = BacklogTracker(bench, count, names), Deadline(timeout_s)
    while not tracker.done:
        bench.group.check_alive()
        if deadline.expired():
            raise RuntimeError(f"the backlog was not processed in time: {tracker.rates}")
        progress = {name: committed(admin, group_id, bench.topic(MEASURED[name]))
                    for name, group_id in groups.items()}
        tracker.observe(progress, time.perf_counter())
        time.sleep(0.05)
    return tracker.results()


def start_processors(bench: StreamsBench, names: tuple[str, ...] = tuple(MEASURED)) -> None:
    for name in names:
        bench.group.start(f"streams-{name}", [*HERALD_ARGV, "streams", "--processor", name])
    # Not waiting for their groups: each one's rate is measured from its own first commit.


def alone_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, streams_app_id=f"{settings.streams_app_id}-{ALONE_SUFFIX}")


def alone_rates(bench: StreamsBench, count: int) -> dict[str, Any]:
    """Each processor through the backlog with nothing else of the bench running, under groups
    of their own (the side-by-side run reads it again from the start): `NAME_alone_eps` and
    `cpu_ms_per_event_alone`. Its outputs stay in the bench's namespace, read by nobody (no
    alert is due within the bench: the backlog's SLAs are an hour)."""
    settings = alone_settings(bench.settings)
    results: dict[str, Any] = {"cpu_ms_per_event_alone": {}}
    with ProcessGroup(bench.group.log_dir / ALONE_SUFFIX, child_environ(settings, os.environ)) as group:
        alone = dataclasses.replace(bench, settings=settings, group=group)
        for name in MEASURED:
            start_processors(alone, (name,))
            measured = processing_rates(alone, count, (name,))
            group.stop(f"streams-{name}")
            results[f"{name}_alone_eps"] = measured[f"{name}_eps"]
            results["cpu_ms_per_event_alone"][name] = measured["cpu_ms_per_event"][name]
    return results


class AlertWatch:
    """A consumer of notifications.missing on a thread: when each key's alerts arrived."""

    def __init__(self, bench: StreamsBench) -> None:
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._stop = threading.Event()
        self._topic = bench.topic(MISSING_NOTIFICATIONS)
        self._consumer = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": "bench-alerts",
                                   "logger": RDKAFKA_LOG, "enable.auto.commit": False})
        partitions = self._consumer.list_topics(self._topic, timeout=10).topics[self._topic].partitions
        self._consumer.assign([TopicPartition(self._topic, p, 0) for p in partitions])
        self._thread = threading.Thread(target=self._run, name="alert-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(500, 0.1):
                if message.error() is None and message.value() is not None:
                    self.arrivals[message.key().decode()].append(time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def alert_phase(bench: StreamsBench, events: int, rate: float) -> dict[str, Any]:
    """Paced payments, half delivered in time; alert delays beyond each deadline, false alerts."""
    sla_s = bench.sla_s
    watch = AlertWatch(bench)
    producer = Producer(producer_config(bench.bootstrap, 60))
    deadlines: dict[str, float] = {}
    pending: list[tuple[float, str]] = []  # (when, registration) whose e-tickets are to be sent
    started = time.time()
    for n in range(events):
        _send_due_statuses(bench, producer, pending, time.time())
        registration = f"ALERT-{n}"
        time.sleep(max(0.0, started + n / rate - time.time()))
        occurred = datetime.now(UTC)
        deadlines[f"{registration}|e_ticket"] = occurred.timestamp() + sla_s
        value = registration_event(registration, "payment_verified", occurred)
        producer.produce(bench.topic(REGISTRATION_EVENTS), value, registration.encode())
        producer.poll(0)
        if n % 2 == 0:
            pending.append((time.time() + DELIVERED_AFTER_S, registration))
    while pending:
        _send_due_statuses(bench, producer, pending, time.time())
        time.sleep(0.05)
    producer.flush(30)
    expected = {k for i, k in enumerate(deadlines) if i % 2 == 1}
    _wait_for_alerts(bench, watch, expected, max(deadlines.values()) + 30)
    watch.stop()
    return score_alerts(deadlines, expected, watch.arrivals)


def _send_due_statuses(bench: StreamsBench, producer: Producer, pending: list[tuple[float, str]],
                       now: float) -> None:
    while pending and pending[0][0] <= now:
        _when, registration = pending.pop(0)
        for channel in ("whatsapp", "email"):
            key, value = sent_status(registration, channel)
            producer.produce(bench.topic(NOTIFICATION_STATUS), value, key)
        producer.poll(0)


def _wait_for_alerts(bench: StreamsBench, watch: AlertWatch, expected: set[str], give_up_at: float) -> None:
    """Until every expected alert arrived and 3 s more passed (for any false or repeated one)."""
    while time.time() < give_up_at:
        bench.group.check_alive()
        if expected <= set(watch.arrivals):
            time.sleep(3.0)
            return
        time.sleep(0.2)


def score_alerts(deadlines: dict[str, float], expected: set[str],
                 arrivals: dict[str, list[float]]) -> dict[str, Any]:
    delays = [arrivals[key][0] - deadlines[key] for key in expected if key in arrivals]
    false_alerts = sum(len(times) for key, times in arrivals.items() if key not in expected)
    repeated = sum(len(times) - 1 for key, times in arrivals.items() if key in expected)
    return {"alerts_expected": len(expected), "alerts_missed": len(expected - set(arrivals)),
            "false_alerts": false_alerts + repeated,
            "alert_delay_p50_s": percentile(delays, 50) if delays else -1.0,
            "alert_delay_p99_s": percentile(delays, 99) if delays else -1.0,
            "alert_delay_min_s": min(delays) if delays else -1.0}


@contextmanager
def bench_processes(settings: Settings, bootstrap: str, sla_s: float) -> Iterator[StreamsBench]:
    namespace = f"bench-streams-{uuid.uuid4().hex[:8]}"
    run_dir = settings.home / "logs" / namespace

    def slas(document: dict[str, Any]) -> None:
        document["notifications"]["e_ticket"]["sla"] = sla_s
        document["notifications"]["welcome"]["sla"] = 3600.0
    catalog_path = write_catalog(run_dir / "catalog.yaml", "registrations", slas)
    configured = dataclasses.replace(settings, namespace=namespace, kafka_bootstrap=bootstrap,
                                     catalog=catalog_path, session_grace_s=3600.0)
    catalog = open_catalog(catalog_path, os.environ)
    specs = topic_catalog(catalog, namespace)
    provision_topics(bootstrap, specs, settings.replication_factor)
    register_and_connect(resolve_registry_url(settings), specs)
    try:
        with ProcessGroup(run_dir, child_environ(configured, os.environ)) as group:
            yield StreamsBench(configured, bootstrap, group, sla_s)
    finally:
        delete_namespace_topics(bootstrap, f"{namespace}.")
        delete_subjects(registry_client(resolve_registry_url(settings)), specs)
        for name in MEASURED:  # the Faust workers' data directories, of both runs
            for app in (configured, alone_settings(configured)):
                shutil.rmtree(settings.home / "streams-data" / streams_app_id(app, name), ignore_errors=True)


def run_bench_streams(settings: Settings, bootstrap: str, events: int, alert_events: int, rate: float,
                      sla_s: float, alone: bool = True) -> dict[str, Any]:
    with bench_processes(settings, bootstrap, sla_s) as bench:
        preload(bench, events)
        results: dict[str, Any] = {"events": events, "workers_per_processor": 1,
                                   "raw_consume_eps": consume_eps(bench, events),
                                   "decoding_consume_eps": consume_eps(bench, events, decode=True)}
        if alone:
            results.update(alone_rates(bench, events))
        start_processors(bench)
        results.update(processing_rates(bench, events))
        # The stage keeps up with the slowest of its processors.
        results["events_per_s"] = min(results[f"{name}_eps"] for name in MEASURED)
        results.update({"sla_s": sla_s, "alert_rate": rate,
                        "scan_interval_s": bench.settings.missing_scan_interval_s})
        results.update(alert_phase(bench, alert_events, rate))
    return results


def print_bench_streams(results: dict[str, Any]) -> None:
    raw, decoding = float(results["raw_consume_eps"]), float(results["decoding_consume_eps"])
    title = f"herald bench streams ({results['events']:,} events, one process per processor, side by side)"
    table = Table("measure", "value", "÷ raw consume", "÷ decoding consume (goal)", title=title)
    table.add_row("raw consume rate of registrations.events (no decoding)", f"{raw:,.0f} events/s",
                  "1.00", "")
    table.add_row("  the same, decoding each record (Python, fastavro)", f"{decoding:,.0f} events/s",
                  f"{decoding / raw:.3f}", "1.00")
    cpu = results.get("cpu_ms_per_event", {})
    for name in MEASURED:
        eps = float(results[f"{name}_eps"])
        table.add_row(f"{PROCESSOR_NAMES[name]} ({MEASURED[name]}), {cpu.get(name, 0):.3f} ms CPU/event",
                      f"{eps:,.0f} events/s", f"{eps / raw:.4f}", f"{eps / decoding:.3f} (≥ {GOALS[name]})")
        if f"{name}_alone_eps" in results:
            alone, alone_cpu = float(results[f"{name}_alone_eps"]), results["cpu_ms_per_event_alone"][name]
            table.add_row(f"  the same, alone on the machine, {alone_cpu:.3f} ms CPU/event",
                          f"{alone:,.0f} events/s", f"{alone / raw:.4f}", f"{alone / decoding:.3f}")
    table.add_row("through all three (the slowest)", f"{results['events_per_s']:,.0f} events/s",
                  f"{results['events_per_s'] / raw:.4f}", "")
    table.add_row(f"missing e-ticket: deadline -> alert, p50 ({results['alerts_expected']} alerts)",
                  f"{results['alert_delay_p50_s']:.2f} s", "", "")
    table.add_row("missing e-ticket: deadline -> alert, p99 (goal ≤ 2 s)",
                  f"{results['alert_delay_p99_s']:.2f} s", "", "")
    table.add_row("alerts missed / false (delivered in time, or repeated)",
                  f"{results['alerts_missed']} / {results['false_alerts']}", "", "")
    Console(width=130).print(table)
    rounded = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in results.items()}
    print(json.dumps(rounded), flush=True)
