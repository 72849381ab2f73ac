"""`herald bench e2e`: each hop's latency for registrations paced through the whole pipeline.

The demo's pipeline without faults (relay, router, the Faust processors, a delivery process
per channel, providers answering at once), with payments verified at a steady rate. Each hop's
p50/p99 comes from the records' own timestamps (`proving/demo_hops.py`), so the slow hop is
named, not guessed. Its baseline, measured in the same run on the same broker: one hop of bare
confluent-kafka at the same rate, a record produced (acks=all, as the relay's producer) until a
read_committed consumer has it. Each of the pipeline's three hops is at least one of those.
The delivery hop comes in two parts as well: the router's commit (until a read_committed reader
beside the pipeline has the request) and the rest (the worker's fetch and the provider call).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Producer
from rich.console import Console
from rich.table import Table

from herald.infra.catalogs import open_catalog
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import producer_config
from herald.infra.provisioning import delete_namespace_topics, provision_topics
from herald.infra.services import Endpoints
from herald.infra.settings import Settings
from herald.proving.demo import run_pipeline
from herald.proving.demo_hops import HOP_NAMES, ReadableWatcher, summary
from herald.schemas.catalog import TopicSpec

TIMEOUT_S = 300.0
# Issue 21's goals for `herald demo --rate 100 --no-faults`: end to end, commit -> provider.
GOAL_P50_MS, GOAL_P99_MS = 40.0, 150.0


def raw_hop_ms(bootstrap: str, rate: float, count: int) -> dict[str, Any]:
    """Produce -> read_committed receipt of bare clients, `count` records paced at `rate`/s."""
    topic = f"bench-e2e-raw-{uuid.uuid4().hex[:8]}"
    provision_topics(bootstrap, (TopicSpec(topic, 6, "delete", 3_600_000, "bench key", "bench value"),))
    try:
        with ReadableWatcher(bootstrap, [topic], start=OFFSET_BEGINNING) as receipts:
            _produce_paced(Producer(producer_config(bootstrap, 30)), topic, rate, count)
            received = Deadline(60)
            while len(receipts.late_ms) < count and not received.expired():
                time.sleep(0.05)
    finally:
        delete_namespace_topics(bootstrap, topic)
    return summary(list(receipts.late_ms.values()))


def _produce_paced(producer: Producer, topic: str, rate: float, count: int) -> None:
    producer.produce(topic, b"warm", b"warm")  # connected and its producer id fetched first
    producer.flush(30)
    started = time.monotonic()
    for n in range(count - 1):
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        producer.produce(topic, b"x" * 300, str(n).encode())
        producer.poll(0)
    producer.flush(30)


def run_bench_e2e(settings: Settings, endpoints: Endpoints, registrations: int,
                  rate: float) -> dict[str, Any]:
    # Three events per registration (created, proof uploaded, verified): the same rate of records.
    raw = raw_hop_ms(endpoints.kafka_bootstrap, 3 * rate, min(3 * registrations, 3000))
    catalog = open_catalog(settings.catalog, {})
    result = run_pipeline(settings, catalog, endpoints, registrations, TIMEOUT_S, rate=rate)
    return {"bench": "e2e", "registrations": registrations, "rate": rate, "warm_up": result.warm_up,
            "lost": result.lost,
            "duplicates": result.duplicates, "p50_ms": round(result.p50_ms, 1),
            "p99_ms": round(result.p99_ms, 1), "hops": result.hops, "raw_hop": raw,
            "achieved_rate": round(registrations / result.written_s, 1) if result.written_s else None,
            "commit_clock": result.commit_clock,
            "goal_p50_ms": GOAL_P50_MS, "goal_p99_ms": GOAL_P99_MS}


def print_bench_e2e(results: dict[str, Any]) -> None:
    raw = results["raw_hop"]
    title = (f"herald bench e2e ({results['registrations']:,} registrations at {results['rate']:g}/s, "
             f"{results['achieved_rate']:g}/s achieved, after {results['warm_up']:,} not counted; "
             f"no faults; providers answer at once)")
    table = Table("measure", "p50 / p99", "÷ one bare Kafka hop (p50 / p99)", title=title)
    table.add_row("one bare Kafka hop: produce (acks=all) -> read_committed consumer", _pair(raw), "1 / 1")
    for hop, figures in results["hops"].items():
        table.add_row(HOP_NAMES[hop], _pair(figures), _ratios(figures, raw))
    table.add_row(f"end to end: verify commit -> provider (goal ≤ {GOAL_P50_MS:g} / {GOAL_P99_MS:g} ms)",
                  _pair(results), _ratios(results, raw))
    table.add_row("lost / duplicated (counted at the simulators)",
                  f"{results['lost']} / {results['duplicates']}", "")
    Console(width=130).print(table)
    print(json.dumps(results), flush=True)


def _pair(figures: dict[str, Any]) -> str:
    return f"{figures['p50_ms']:.0f} / {figures['p99_ms']:.0f} ms"


def _ratios(figures: dict[str, Any], raw: dict[str, Any]) -> str:
    return " / ".join(f"{figures[k] / raw[k]:.1f}" if raw[k] > 0 else "-" for k in ("p50_ms", "p99_ms"))
