"""`herald bench deliver`: delivery measured against the simulators, beside its own baseline.

In one run, in a database and namespaces of its own, with gateway and email simulators
answering after `latency_ms`:
- baseline: the raw provider rate, the same concurrency of httpx requests straight at the
  simulator with no Kafka, the most a delivery worker could reach;
- a campaign: `campaign` WhatsApp notifications written through the outbox in one
  transaction; seconds from its commit to the simulator accepting the last one;
- commit -> provider latency at a steady `rate` per second (p50/p99 after a 1 s warm-up);
- throughput of one consumer group with 1, 2 and 4 worker processes;
- failover: seconds from kill -9 of one of two workers to the first delivery, after the
  kill, of a record from one of its partitions.
Lost and duplicated messages are counted at the simulators, over every phase.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from herald.consumers import event_loop
from herald.consumers.http_clients import delivery_client
from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.deadline import Deadline, wait_until
from herald.infra.kafka_io import RDKAFKA_LOG, client_pid, producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.provisioning import delete_namespace_topics, provision_topics
from herald.infra.schema_registry import delete_subjects, register_and_connect, registry_client
from herald.infra.services import resolve_registry_url
from herald.infra.settings import Settings, child_environ
from herald.ops.launch import HERALD_ARGV
from herald.producers.outbox import DomainEvent, emit
from herald.producers.sessions import open_session
from herald.proving.bench_relay import percentile
from herald.proving.catalogs import provider_environ
from herald.proving.cpu_usage import CpuReading, cpu_by_process, spent_since
from herald.proving.demo import wait_for_groups
from herald.proving.simulators.network import SimulatorNetwork
from herald.schemas.catalog import (
    SESSION_EVENTS,
    TopicSpec,
    consumer_group,
    notification_topic,
    qualified,
    topic_catalog,
)
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import encode
from herald.schemas.ids import notification_id
from herald.schemas.migrations import scratch_database

SESSION = "bench-wa"
WARMUP_S = 1.0


def bench_catalog() -> Catalog:
    """The registrations example's catalog: the one the bench's processes run."""
    return open_catalog(example_catalog_path("registrations"), os.environ)


CONCURRENCY = 64  # each channel's in the registrations example's catalog


def requests_for(prefix: str, count: int, channel: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [{"notification_id": notification_id(f"{prefix}-{n:06d}", "e_ticket", channel),
             "subject_id": f"{prefix}-{n:06d}", "notification_type": "e_ticket", "channel": channel,
             "recipient": f"+62813{n:07d}" if channel == "whatsapp" else f"b{n}@example.test",
             "template": "e_ticket", "params": {"name": f"B{n}"}, "source_event_id": str(uuid.uuid4()),
             "source_occurred_at": now, "workspace_id": "default"} for n in range(count)]


def emit_requests(engine: sa.Engine, requests: list[dict[str, Any]]) -> float:
    """One outbox transaction; returns when it committed (epoch seconds)."""
    with Session(engine) as session, session.begin():
        for request in requests:
            emit(session, DomainEvent(topic=notification_topic(request["channel"]),
                                      key=request["notification_id"],
                                      schema_name="herald.NotificationRequest",
                                      event_type="notification.e_ticket.requested", record=request))
    return time.time()


def produce_requests(producer: Producer, topic: str, requests: list[dict[str, Any]],
                     partitions: dict[str, int] | None = None) -> None:
    """Straight to Kafka, acknowledged on return; with `partitions`, notes each one's partition."""
    def noted(error: Any, message: Any) -> None:
        if partitions is not None and error is None:
            partitions[message.key().decode()] = message.partition()

    for request in requests:
        producer.produce(topic, key=request["notification_id"].encode(),
                         value=encode("herald.NotificationRequest", request), on_delivery=noted)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("bench: requests not acknowledged")


def accepted_at(network: SimulatorNetwork, channel: str, ids: set[str]) -> dict[str, float]:
    """notification id -> first acceptance (epoch seconds) for `ids` that arrived."""
    first: dict[str, float] = {}
    for message in network.messages(channel):
        if message["notification_id"] in ids:
            at = message["accepted_at_ms"] / 1000
            first[message["notification_id"]] = min(first.get(message["notification_id"], at), at)
    return first


def wait_delivered(network: SimulatorNetwork, channel: str, ids: set[str], before: int,
                   timeout_s: float, group: ProcessGroup) -> dict[str, float]:
    """Until the simulator accepted every one of `ids`; `before` is its count when they were sent.

    Polls the cheap count, and reads the messages only once they can all be there.
    """
    deadline = Deadline(timeout_s)
    while True:
        group.check_alive()
        if network.accepted(channel) >= before + len(ids) or deadline.expired():
            seen = accepted_at(network, channel, ids)
            if len(seen) == len(ids) or deadline.expired():
                return seen
        time.sleep(0.2)


def raw_provider_eps(network: SimulatorNetwork, count: int, concurrency: int) -> float:
    """The baseline: `concurrency` requests in flight straight at a gateway instance, no Kafka."""
    async def run() -> float:
        semaphore = asyncio.Semaphore(concurrency)
        client = delivery_client(concurrency, 30)  # the workers' own client
        try:
            async def one(request: dict[str, Any]) -> None:
                async with semaphore:
                    response = await client.post_json(
                        f"{network.whatsapp[0]}/sessions/{SESSION}/messages",
                        {"to": request["recipient"], "template": "e_ticket",
                         "subject_id": request["subject_id"],
                         "notification_id": request["notification_id"]},
                        {"Idempotency-Key": request["notification_id"]})
                    response.raise_for_status()
            requests = requests_for(f"RAW-{uuid.uuid4().hex[:6]}", count, "whatsapp")
            started = time.perf_counter()
            await asyncio.gather(*(one(r) for r in requests))
            return count / (time.perf_counter() - started)
        finally:
            await client.aclose()
    return event_loop.run(run())  # the workers' own loop


@dataclasses.dataclass
class Bench:
    """One run's settings, simulators and processes, and every notification it asked for."""

    settings: Settings
    network: SimulatorNetwork
    group: ProcessGroup
    expected: dict[str, set[str]] = dataclasses.field(
        default_factory=lambda: {"whatsapp": set(), "email": set()})
    registered: list[TopicSpec] = dataclasses.field(default_factory=list)  # subjects to delete at the end

    def namespaced(self, suffix: str) -> Settings:
        """Settings of a fresh namespace (its own topics and groups), for one phase."""
        namespace = f"{self.settings.namespace}{suffix}"
        specs = topic_catalog(bench_catalog(), namespace)
        provision_topics(self.bootstrap, specs)
        register_and_connect(resolve_registry_url(self.settings), specs)
        self.registered.extend(specs)
        return dataclasses.replace(self.settings, namespace=namespace)

    def cpu_by_process(self) -> CpuReading:
        return cpu_by_process({p.pid: _part(name) for name, p in self.group.processes.items()})

    def cpu_ms_per_message(self, before: CpuReading, messages: int) -> dict[str, float]:
        """Each part's CPU since `before`, in ms per message, largest first."""
        spent = spent_since(before, self.cpu_by_process())
        return {part: round(s * 1000 / messages, 3) for part, s in sorted(spent.items(), key=lambda i: -i[1])}

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap or ""

    def env(self, settings: Settings) -> dict[str, str]:
        environ = child_environ(settings, os.environ)
        return {**environ, **provider_environ(self.network.whatsapp, self.network.email)}

    def start_workers(self, settings: Settings, channel: str, count: int, prefix: str) -> list[str]:
        self.group.env = self.env(settings)
        names = [f"{prefix}-{n}" for n in range(count)]
        for name in names:
            self.group.start(name, [*HERALD_ARGV, "deliver", "--channel", channel, "--tier", "0"])
        group_id = consumer_group("deliver", notification_topic(channel), settings.namespace)
        wait_for_groups(self.bootstrap, [group_id], Deadline(90), self.group, members=count)
        return names


def _part(process_name: str) -> str:
    """A bench process's part of the machine: simulators, relay or delivery workers."""
    if process_name.startswith("simulator"):
        return "simulators"
    return "relay" if process_name == "relay" else "delivery workers"


def member_partitions(bootstrap: str, group_id: str, pid: int) -> set[int]:
    """The partitions of the member whose client id names process `pid`."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    description = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id].result()
    for member in description.members:
        if client_pid(member.client_id) == pid:
            return {tp.partition for tp in member.assignment.topic_partitions}
    raise RuntimeError(f"no member of {group_id} runs in process {pid}")


@dataclasses.dataclass(frozen=True)
class Campaign:
    """WhatsApp requests written through the outbox in one transaction."""

    ids: set[str]
    accepted_before: int  # the simulators' count when it was written
    committed_at: float

    @classmethod
    def emit(cls, bench: Bench, engine: sa.Engine, prefix: str, count: int) -> Campaign:
        requests = requests_for(f"{prefix}-{uuid.uuid4().hex[:6]}", count, "whatsapp")
        ids = {r["notification_id"] for r in requests}
        bench.expected["whatsapp"] |= ids
        before = bench.network.accepted("whatsapp")
        return cls(ids, before, emit_requests(engine, requests))

    def delivered(self, bench: Bench) -> dict[str, float]:
        return wait_delivered(bench.network, "whatsapp", self.ids, self.accepted_before, 600, bench.group)


def campaign_phase(bench: Bench, engine: sa.Engine, count: int) -> dict[str, float]:
    campaign = Campaign.emit(bench, engine, "CAMP", count)
    committed = campaign.committed_at
    busy_before, parts_before = machine_busy_s(), bench.cpu_by_process()
    seen = campaign.delivered(bench)
    busy = machine_busy_s() - busy_before
    return {"campaign": count, "campaign_s": max(seen.values()) - committed if seen else -1.0,
            "campaign_cpu_ms_per_msg": busy * 1000 / count,
            "campaign_cpu_ms_by_part": bench.cpu_ms_per_message(parts_before, count)}


def warm_up(bench: Bench, engine: sa.Engine, count: int, rate: float) -> int:
    """A smaller campaign and two seconds at `rate`, not measured: a broker just started
    spends a fifth of a core compiling its hot paths (the JIT), and every process fills its
    caches and pools. Counted in lost and duplicates like the rest."""
    Campaign.emit(bench, engine, "WARM", count).delivered(bench)
    steady_phase(bench, engine, rate, 2.0)
    return count + int(rate * 2.0)


def machine_busy_s() -> float:
    """CPU seconds every process on the machine spent so far (Linux /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def steady_phase(bench: Bench, engine: sa.Engine, rate: float, seconds: float) -> dict[str, float]:
    """Commits of 5 requests at a time, paced to `rate` per second; commit -> acceptance."""
    requests = requests_for(f"PACE-{uuid.uuid4().hex[:6]}", int(rate * seconds), "whatsapp")
    bench.expected["whatsapp"] |= {r["notification_id"] for r in requests}
    committed: dict[str, float] = {}
    before = bench.network.accepted("whatsapp")
    parts_before = bench.cpu_by_process()
    started = time.time()
    for n in range(0, len(requests), 5):
        time.sleep(max(0.0, started + n / rate - time.time()))
        batch = requests[n:n + 5]
        at = emit_requests(engine, batch)
        committed.update((r["notification_id"], at) for r in batch)
    paced_eps = len(requests) / (time.time() - started) if requests else 0.0
    seen = wait_delivered(bench.network, "whatsapp", set(committed), before, 120, bench.group)
    warmup_s = min(WARMUP_S, seconds / 5)
    settled = [(seen[i] - at) * 1000 for i, at in committed.items() if i in seen and at >= started + warmup_s]
    return {"paced_eps": paced_eps,
            "p50_ms": percentile(settled, 50), "p99_ms": percentile(settled, 99),
            "paced_cpu_ms_by_part": bench.cpu_ms_per_message(parts_before, max(1, len(requests)))}


def scaling_phase(bench: Bench, workers: int, count: int) -> float:
    """Email requests through one group of `workers` processes, from produce to last acceptance."""
    settings = bench.namespaced(f"w{workers}")
    names = bench.start_workers(settings, "email", workers, f"scale-{workers}")
    requests = requests_for(f"SCALE{workers}-{uuid.uuid4().hex[:6]}", count, "email")
    ids = {r["notification_id"] for r in requests}
    bench.expected["email"] |= ids
    before = bench.network.accepted("email")
    started = time.time()
    produce_requests(Producer(producer_config(bench.bootstrap, 60)),
                     qualified(notification_topic("email"), settings.namespace), requests)
    seen = wait_delivered(bench.network, "email", ids, before, 300, bench.group)
    for name in names:
        bench.group.stop(name)
    return count / (max(seen.values()) - started) if len(seen) == count else 0.0


def failover_phase(bench: Bench, rate: float = 200.0, before_s: float = 3.0, after_s: float = 12.0) -> float:
    """Two workers under a steady load; kill -9 one; until its partitions deliver again."""
    settings = bench.namespaced("fo")
    names = bench.start_workers(settings, "email", 2, "failover")
    victim = bench.group.processes[names[0]]
    group_id = consumer_group("deliver", notification_topic("email"), settings.namespace)
    topic = qualified(notification_topic("email"), settings.namespace)
    produced_at: dict[str, float] = {}
    partitions: dict[str, int] = {}
    before = bench.network.accepted("email")
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(bench, topic, rate, stop, produced_at, partitions))
    feeder.start()
    try:
        time.sleep(before_s)
        lost_partitions = member_partitions(bench.bootstrap, group_id, victim.pid)
        killed_at = time.time()
        bench.group.kill(names[0])
        time.sleep(after_s)
    finally:
        stop.set()
        feeder.join()
    seen = wait_delivered(bench.network, "email", set(produced_at), before, 120, bench.group)
    after = [seen[i] for i, at in produced_at.items()
             if at >= killed_at and partitions.get(i) in lost_partitions and i in seen]
    bench.group.stop(names[1])
    return min(after) - killed_at if after else -1.0


def _feed(bench: Bench, topic: str, rate: float, stop: threading.Event,
          produced_at: dict[str, float], partitions: dict[str, int]) -> None:
    prefix = f"FAIL-{uuid.uuid4().hex[:6]}"
    producer = Producer(producer_config(bench.bootstrap, 60))  # one client for the whole feed
    n = 0
    started = time.time()
    while not stop.is_set():
        (request,) = requests_for(f"{prefix}-{n}", 1, "email")
        bench.expected["email"].add(request["notification_id"])
        produced_at[request["notification_id"]] = time.time()
        produce_requests(producer, topic, [request], partitions)
        n += 1
        time.sleep(max(0.0, started + n / rate - time.time()))


def count_lost_and_doubled(bench: Bench) -> dict[str, int]:
    lost = doubled = 0
    for channel, ids in bench.expected.items():
        copies: dict[str, int] = {}
        for message in bench.network.messages(channel):
            copies[message["notification_id"]] = copies.get(message["notification_id"], 0) + 1
        lost += len(ids - set(copies))
        doubled += sum(n - 1 for i, n in copies.items() if i in ids and n > 1)
    return {"lost": lost, "duplicates": doubled}


@contextmanager
def bench_stack(settings: Settings, bootstrap: str, server_url: str, latency_ms: float) -> Iterator[Bench]:
    run_id = f"benchd{uuid.uuid4().hex[:6]}"
    specs = topic_catalog(bench_catalog(), run_id)
    provision_topics(bootstrap, specs)
    register_and_connect(resolve_registry_url(settings), specs)
    with scratch_database(server_url, run_id) as url, _topics_deleted(bootstrap, run_id):
        configured = dataclasses.replace(settings, kafka_bootstrap=bootstrap, database_url=url,
                                         namespace=run_id)
        network = SimulatorNetwork.plan(settings.home / "logs" / run_id / "simulators")
        with ProcessGroup(settings.home / "logs" / run_id, dict(os.environ)) as group:
            network.start(group)
            for url_ in (*network.whatsapp, network.email):
                network.faults(url_, latency_ms=latency_ms)
            network.place_session(network.whatsapp[0], SESSION)
            bench = Bench(configured, network, group, registered=list(specs))
            try:
                yield bench
            finally:
                delete_subjects(registry_client(resolve_registry_url(settings)), tuple(bench.registered))


@contextmanager
def _topics_deleted(bootstrap: str, run_id: str) -> Iterator[None]:
    """Every phase's topics (`<run_id>`, `<run_id>w1`, ...) go when the run ends."""
    try:
        yield
    finally:
        delete_namespace_topics(bootstrap, run_id)


def run_bench_deliver(settings: Settings, bootstrap: str, server_url: str, campaign: int, rate: float,
                      seconds: float, latency_ms: float, scale_records: int) -> dict[str, Any]:
    with bench_stack(settings, bootstrap, server_url, latency_ms) as bench:
        results: dict[str, Any] = {"latency_ms": latency_ms,
                                   "concurrency": CONCURRENCY}
        results["raw_provider_eps"] = raw_provider_eps(bench.network, 2000, CONCURRENCY)
        engine = sa.create_engine(bench.settings.database_url or "")
        try:
            start_campaign_pipeline(bench, engine)
            results["warmup"] = warm_up(bench, engine, max(1, campaign // 4), rate)
            results.update(campaign_phase(bench, engine, campaign))
            results.update(steady_phase(bench, engine, rate, seconds))
        finally:
            engine.dispose()
        results["eps_by_workers"] = {n: scaling_phase(bench, n, scale_records) for n in (1, 2, 4)}
        results["failover_s"] = failover_phase(bench)
        results.update(count_lost_and_doubled(bench))
    results["campaign_10k_s"] = results.pop("campaign_s")
    return results


def start_campaign_pipeline(bench: Bench, engine: sa.Engine) -> None:
    """The session declared first, so every worker's directory has it; then relay and workers."""
    with Session(engine) as session, session.begin():
        open_session(session, session_id=SESSION, workspace_id="default", status="connected",
                     phone="+628110000", gateway_instance=bench.network.whatsapp[0])
    bench.group.env = bench.env(bench.settings)
    bench.group.start("relay", [*HERALD_ARGV, "relay"])
    wait_until(lambda: _published(bench), 60, "the session's event to be published")
    bench.group.start("deliver-whatsapp", [*HERALD_ARGV, "deliver", "--channel", "whatsapp"])
    wait_for_groups(bench.bootstrap, [consumer_group("deliver", notification_topic("whatsapp"),
                                                     bench.settings.namespace)], Deadline(90), bench.group)


def _published(bench: Bench) -> bool:


    topic = qualified(SESSION_EVENTS, bench.settings.namespace)
    consumer = Consumer({"bootstrap.servers": bench.bootstrap, "group.id": "bench-probe",
                         "logger": RDKAFKA_LOG})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in partitions) > 0
    except KafkaException:  # a broker that just started may not lead its partitions yet
        return False
    finally:
        consumer.close()


def print_bench_deliver(results: dict[str, Any]) -> None:
    raw = float(results["raw_provider_eps"])
    table = Table("measure", "value", "÷ raw provider rate",
                  title=f"herald bench deliver (simulators answer after {results['latency_ms']:g} ms)")
    table.add_row("raw provider rate (httpx, no Kafka)", f"{raw:,.0f} msg/s", "1.00")
    table.add_row("warm-up through the pipeline, not measured", f"{results['warmup']:,} notifications", "")
    campaign_eps = results["campaign"] / results["campaign_10k_s"] if results["campaign_10k_s"] > 0 else 0
    table.add_row(f"campaign of {results['campaign']:,}: commit -> last delivery",
                  f"{results['campaign_10k_s']:.2f} s ({campaign_eps:,.0f} msg/s)",
                  f"{campaign_eps / raw:.2f}")
    table.add_row("campaign: CPU of the whole machine per notification",
                  f"{results['campaign_cpu_ms_per_msg']:.2f} ms", "")
    table.add_row("  of which (ms per notification)", _parts(results["campaign_cpu_ms_by_part"]), "")
    table.add_row(f"commit -> provider at {results['paced_eps']:,.0f}/s, p50",
                  f"{results['p50_ms']:.1f} ms", "")
    table.add_row(f"commit -> provider at {results['paced_eps']:,.0f}/s, p99",
                  f"{results['p99_ms']:.1f} ms", "")
    table.add_row("  CPU of that run (ms per notification)", _parts(results["paced_cpu_ms_by_part"]), "")
    for workers, eps in results["eps_by_workers"].items():
        table.add_row(f"one group, {workers} worker process(es)", f"{eps:,.0f} msg/s", f"{eps / raw:.2f}")
    table.add_row("failover: kill -9 -> its partitions deliver again", f"{results['failover_s']:.2f} s", "")
    table.add_row("lost / duplicates (counted at the simulators)",
                  f"{results['lost']} / {results['duplicates']}", "")
    Console(width=120).print(table)  # readable when piped to a file, too
    rounded = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in results.items()}
    rounded["eps_by_workers"] = {str(k): round(v, 1) for k, v in results["eps_by_workers"].items()}
    print(json.dumps(rounded), flush=True)


def _parts(ms_by_part: dict[str, float]) -> str:
    return ", ".join(f"{part} {ms:.2f}" for part, ms in ms_by_part.items() if ms >= 0.01)
