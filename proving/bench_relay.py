"""`herald bench relay`: the relay's throughput and latency, against its two limits, in one run.

Everything runs on the same broker and database, in a database and namespace of its own:
  raw_producer_eps  the same records through a bare confluent-kafka producer (no database)
  raw_claim_eps     the relay's claim-and-remove statement on the same rows (no Kafka)
  drain_eps_1/3     a pre-filled outbox drained by 1 and by 3 relay processes
  sustained_eps     writers committing through emit() while one relay publishes
  p50_ms/p99_ms     commit -> broker append time (LogAppendTime) at a steady 1,000 events/s
  order_kept        per-key order of first occurrences after the 3-relay drain
Ratios to the lower limit are what to compare across machines; absolute rates are noise.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import statistics
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg2.extras
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from herald.infra.deadline import Deadline, wait_until
from herald.infra.kafka_io import RDKAFKA_LOG, producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.provisioning import delete_namespace_topics
from herald.infra.settings import Settings, child_environ
from herald.ops.launch import HERALD_ARGV
from herald.producers.leases import lease_holders
from herald.producers.outbox import DomainEvent, emit, outbox_backlog, shard_of
from herald.producers.relay import CLAIM, prepare_claim_session
from herald.schemas.catalog import qualified
from herald.schemas.codec import encode
from herald.schemas.headers import event_headers
from herald.schemas.migrations import scratch_database

PHASES = ("raw", "drain1", "drain3", "sustained", "latency")  # each publishes to bench.<phase>
PACED_WARMUP_S = 1.0  # at most; the start of the paced run left out of p50/p99 (commit_to_append)


@dataclass(frozen=True)
class BenchEvent:
    key: str
    event_id: str
    payload: bytes
    headers: dict[str, str]


def make_events(count: int, keys: int) -> list[BenchEvent]:
    """`count` registration events over `keys` keys; per key, list order is the order to keep."""
    events = []
    occurred = datetime.now(UTC)
    for n in range(count):
        key = f"BENCH-{n % keys:06d}"
        event_id = str(uuid.uuid4())
        payload = encode("herald.RegistrationEvent", {
            "event_id": event_id, "registration_id": key, "status": "payment_verified",
            "participant_name": f"Participant {n}", "phone": "+6281234567890",
            "email": "participant@example.test", "occurred_at": occurred})
        headers = event_headers(event_id=event_id, event_type="registration.payment_verified")
        events.append(BenchEvent(key, event_id, payload, headers))
    return events


def prefill(database_url: str, events: list[BenchEvent], topic: str) -> None:
    """All rows in one transaction, so they become visible to relays at one instant."""
    rows = [(shard_of(e.key), topic, e.key, e.event_id, "registration.payment_verified", e.payload,
             json.dumps(e.headers)) for e in events]
    with _dbapi(database_url) as conn, conn.cursor() as cursor:
        psycopg2.extras.execute_values(
            cursor, "INSERT INTO outbox (shard, topic, message_key, event_id, event_type, payload, headers) "
            "VALUES %s", rows, page_size=5000)
        conn.commit()


@contextmanager
def _dbapi(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    raw = engine.raw_connection()
    try:
        assert raw.dbapi_connection is not None
        yield raw.dbapi_connection  # type: ignore[misc]
    finally:
        raw.close()
        engine.dispose()


def outbox_empty(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return outbox_backlog(conn).rows == 0


def raw_producer_eps(bootstrap: str, topic: str, events: list[BenchEvent]) -> float:
    producer = Producer(producer_config(bootstrap, 60, **{"queue.buffering.max.messages": 1_000_000}))
    started = time.perf_counter()
    for e in events:
        while True:
            try:
                producer.produce(topic, key=e.key.encode(), value=e.payload, headers=e.headers)
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(120):
        raise RuntimeError("raw producer: records not acknowledged")
    return len(events) / (time.perf_counter() - started)


def raw_claim_eps(database_url: str, events: list[BenchEvent], batch_size: int) -> float:
    prefill(database_url, events, "bench.claim")
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    claimed, shards = 0, list(range(32))
    started = time.perf_counter()
    with engine.connect() as conn:
        prepare_claim_session(conn)
        while rows := conn.execute(CLAIM, {"shards": shards, "limit": batch_size}).all():
            claimed += len(rows)
            conn.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    assert claimed == len(events), f"claimed {claimed} of {len(events)}"
    return claimed / elapsed


def drain_eps(settings: Settings, group: ProcessGroup, relays: int, events: list[BenchEvent],
              topic: str) -> float:
    """Start `relays` relays, wait until they lease every shard, then time draining a pre-fill."""
    assert settings.database_url is not None
    names = [group.start(f"relay-{relays}-{n}", [*HERALD_ARGV, "relay"]) for n in range(relays)]
    engine = sa.create_engine(settings.database_url)  # pooled: polled for leases, then emptiness
    watermarks = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "herald-bench"})
    try:
        wait_until(lambda: _leased(engine) == (relays, 32), 60, "relays to lease every shard")
        prefill(settings.database_url, events, topic)
        started = time.perf_counter()
        # Watch the topic, not the table: counting a 200,000-row table every 50 ms would take
        # a good part of a core from the PostgreSQL the relays are claiming from.
        on_broker = qualified(topic, settings.namespace)
        wait_until(lambda: appended(watermarks, on_broker) >= len(events), 600,
                   "the drain to be published", 0.05)
        wait_until(lambda: outbox_empty(engine), 60, "the outbox to drain", 0.01)
        elapsed = time.perf_counter() - started
    finally:
        watermarks.close()
        engine.dispose()
    for process in names:
        process.terminate()
        process.wait(60)
    return len(events) / elapsed


def appended(consumer: Consumer, topic: str) -> int:
    """Records on the broker in `topic` (a fresh topic per phase, so its end offsets)."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
               for p in partitions)


def _leased(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        holders = [h for h in lease_holders(conn) if h.shards]
    return len(holders), sum(len(h.shards) for h in holders)


def run_writers(database_url: str, topic: str, writers: int, seconds: float, per_tx: int,
                rate_eps: float | None = None) -> dict[str, float]:
    """Writers committing `per_tx` events per transaction through emit(); event_id -> commit time."""
    engine = sa.create_engine(database_url, pool_size=writers)
    commits: dict[str, float] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def writer(w: int) -> None:
        n, interval = 0, (per_tx * writers / rate_eps) if rate_eps else 0.0
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            ids = []
            with Session(engine) as session, session.begin():
                for _ in range(per_tx):
                    ids.append(str(uuid.uuid4()))
                    emit(session, _bench_event(topic, f"W{w}-{n % 500:04d}", ids[-1]))
                    n += 1
            committed = time.time()
            with lock:
                commits.update((i, committed) for i in ids)
            if interval:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    return commits


def _bench_event(topic: str, key: str, event_id: str) -> DomainEvent:
    return DomainEvent(topic=topic, key=key, schema_name="herald.RegistrationEvent",
                       event_type="registration.payment_verified", record={
                           "event_id": event_id, "registration_id": key, "status": "payment_verified",
                           "participant_name": "Bench", "phone": "+6281234567890",
                           "email": "bench@example.test", "occurred_at": datetime.now(UTC)})


@dataclass(frozen=True)
class Published:
    key: str
    event_id: str
    appended_at: float  # the broker's LogAppendTime, in seconds


def read_published(bootstrap: str, topic: str, expected_ids: int, timeout_s: float = 300) -> list[Published]:
    """Every record of `topic`, partition by partition in offset order, until `expected_ids` are seen."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    records: list[Published] = []
    ids: set[str] = set()
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline, idle = Deadline(timeout_s), time.monotonic()
        while not deadline.expired() and (len(ids) < expected_ids or time.monotonic() - idle < 1.0):
            for m in consumer.consume(5000, 0.2):
                if m.error() is None:
                    event_id = dict(m.headers() or [])["event-id"].decode()
                    ids.add(event_id)
                    records.append(Published(m.key().decode(), event_id, m.timestamp()[1] / 1000))
                    idle = time.monotonic()
    finally:
        consumer.close()
    return records


def first_occurrence_order(records: list[Published]) -> dict[str, list[str]]:
    """key -> event ids in the order of their first occurrence (one key is in one partition)."""
    order: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        if record.event_id not in seen:
            seen.add(record.event_id)
            order[record.key].append(record.event_id)
    return order


def create_topic(bootstrap: str, name: str, log_append_time: bool) -> None:
    config = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    admin.create_topics([NewTopic(name, 6, 1, config=config)])[name].result()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def order_kept(events: list[BenchEvent], seen: dict[str, list[str]]) -> bool:
    expected: dict[str, list[str]] = defaultdict(list)
    for e in events:
        expected[e.key].append(e.event_id)
    return all(seen.get(key) == ids for key, ids in expected.items())



def run_bench_relay(settings: Settings, bootstrap: str, server_url: str, events_count: int,
                    keys: int, seconds: float) -> dict[str, float | bool]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    try:
        return _bench_relay(settings, bootstrap, server_url, namespace, events_count, keys, seconds)
    finally:  # hundreds of thousands of records a run: left behind, they pile up on the broker
        delete_namespace_topics(bootstrap, namespace)


def _bench_relay(settings: Settings, bootstrap: str, server_url: str, namespace: str, events_count: int,
                 keys: int, seconds: float) -> dict[str, float | bool]:
    for phase in PHASES:
        create_topic(bootstrap, qualified(f"bench.{phase}", namespace), log_append_time=True)
    events = make_events(events_count, keys)
    # Hundreds of thousands of long-lived objects would make every garbage collection in
    # this process slow, handicapping the in-process baselines against the relay processes.
    gc.collect()
    gc.freeze()
    results: dict[str, float | bool] = {"events": events_count}
    results["raw_producer_eps"] = raw_producer_eps(bootstrap, qualified("bench.raw", namespace), events)
    with scratch_database(server_url, namespace) as url:
        bench = dataclasses.replace(settings, kafka_bootstrap=bootstrap, database_url=url,
                                    namespace=namespace)
        results["raw_claim_eps"] = raw_claim_eps(url, events, bench.relay_batch_size)
        with ProcessGroup(settings.home / "logs" / namespace, child_environ(bench, os.environ)) as group:
            results["drain_eps_1"] = drain_eps(bench, group, 1, events, "bench.drain1")
            results["drain_eps_3"] = drain_eps(bench, group, 3, events, "bench.drain3")
            drained = read_published(bootstrap, qualified("bench.drain3", namespace), events_count)
            results["order_kept"] = order_kept(events, first_occurrence_order(drained))
            results.update(steady_load(bench, group, seconds))
    return results


def steady_load(settings: Settings, group: ProcessGroup, seconds: float) -> dict[str, float]:
    """Sustained writers, then a paced 1,000 events/s, each with one relay publishing."""
    url, bootstrap = settings.database_url or "", settings.kafka_bootstrap or ""
    group.start("relay-steady", [*HERALD_ARGV, "relay"])
    engine = sa.create_engine(url)  # pooled: polled every 50 ms
    try:
        wait_until(lambda: _leased(engine) == (1, 32), 60, "the relay to lease every shard")
        started = time.perf_counter()
        commits = run_writers(url, "bench.sustained", writers=4, seconds=seconds, per_tx=50)
        wait_until(lambda: outbox_empty(engine), 300, "the sustained backlog to drain", 0.05)
        sustained = len(commits) / (time.perf_counter() - started)
        commits = run_writers(url, "bench.latency", writers=2, seconds=seconds, per_tx=5, rate_eps=1000)
        wait_until(lambda: outbox_empty(engine), 120, "the paced events to drain", 0.05)
    finally:
        engine.dispose()
    return {"sustained_eps": sustained, "paced_eps": len(commits) / seconds,
            **commit_to_append(bootstrap, qualified("bench.latency", settings.namespace), commits,
                               warmup_s=min(PACED_WARMUP_S, seconds / 5))}


def commit_to_append(bootstrap: str, topic: str, commits: dict[str, float],
                     warmup_s: float) -> dict[str, float]:
    """p50/p99 commit -> broker append of the paced events, after a warm-up, and p99 of all.

    The warm-up: the paced run follows the sustained burst at once, and its first half second
    was seen to hold a one-off stall of up to ~250 ms (p99 of all 141 ms, 22.8 ms after 1 s).
    Both figures are reported.
    """
    appended: dict[str, float] = {}
    for record in read_published(bootstrap, topic, len(commits)):
        appended.setdefault(record.event_id, record.appended_at)  # the first copy's append time
    missing = len(set(commits) - set(appended))
    if missing:
        raise RuntimeError(f"bench: {missing} paced events never reached the topic")
    settled_at = min(commits.values()) + warmup_s
    latency_ms = {event: (appended[event] - committed) * 1000 for event, committed in commits.items()}
    settled = [latency_ms[event] for event, committed in commits.items() if committed >= settled_at]
    return {"p50_ms": percentile(settled, 50), "p99_ms": percentile(settled, 99),
            "p99_ms_with_warmup": percentile(list(latency_ms.values()), 99)}


def print_bench_relay(results: dict[str, float | bool]) -> None:
    limit = min(float(results["raw_producer_eps"]), float(results["raw_claim_eps"]))
    table = Table("measure", "value", "÷ lower limit",
                  title="herald bench relay (same broker, same database)")
    for name in ("raw_producer_eps", "raw_claim_eps", "drain_eps_1", "drain_eps_3", "sustained_eps"):
        value = float(results[name])
        table.add_row(name, f"{value:,.0f} events/s", f"{value / limit:.2f}")
    table.add_row("paced_eps", f"{float(results['paced_eps']):,.0f} events/s", "")
    table.add_row("p50_ms (commit -> broker append)", f"{float(results['p50_ms']):.1f} ms", "")
    table.add_row("p99_ms (commit -> broker append)", f"{float(results['p99_ms']):.1f} ms", "")
    table.add_row("p99_ms_with_warmup (warm-up too)", f"{float(results['p99_ms_with_warmup']):.1f} ms", "")
    table.add_row("order_kept (3 relays)", str(results["order_kept"]), "")
    Console().print(table)
    rounded = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in results.items()}
    print(json.dumps({**rounded, "drain_ratio_1": round(float(results["drain_eps_1"]) / limit, 3),
                      "drain_ratio_3": round(float(results["drain_eps_3"]) / limit, 3)}), flush=True)
