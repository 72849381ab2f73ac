"""The PNG plots of docs/benchmarks.md: throughput against its baselines, latency, scaling."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

Bars = list[tuple[str, float]]


def throughput_bars(results: dict[str, dict[str, Any]]) -> Bars:
    b, r, d, s = results["baselines"], results["relay"], results["deliver"], results["streams"]
    campaign_eps = d["campaign"] / d["campaign_10k_s"] if d["campaign_10k_s"] > 0 else 0.0
    return [("Kafka ProducerPerformance", b["producer_perf_eps"]),
            ("pgbench outbox inserts", b["pgbench_rows_per_s"]),
            ("raw Python producer", r["raw_producer_eps"]), ("relay drain, 1 relay", r["drain_eps_1"]),
            ("relay drain, 3 relays", r["drain_eps_3"]), ("writers + relay", r["sustained_eps"]),
            ("raw provider (HTTP)", d["raw_provider_eps"]), ("delivery campaign", campaign_eps),
            ("raw consume", s["raw_consume_eps"]), ("streams (slowest)", s["events_per_s"])]


def latency_bars(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(what, p50 ms, p99 ms)."""
    b, r, d, s = results["baselines"], results["relay"], results["deliver"], results["streams"]
    return [("ProducerPerformance\nsend->ack", b["producer_perf_p50_ms"], b["producer_perf_p99_ms"]),
            ("relay\ncommit->append", r["p50_ms"], r["p99_ms"]),
            ("delivery\ncommit->provider", d["p50_ms"], d["p99_ms"]),
            ("missing alert\nbeyond deadline", s["alert_delay_p50_s"] * 1000, s["alert_delay_p99_s"] * 1000)]


def write_plots(results: dict[str, dict[str, Any]], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its INFO lines drown the benches' output
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "throughput.png", directory / "latency.png", directory / "scaling.png"]
    _throughput(plt, throughput_bars(results), paths[0])
    _latency(plt, latency_bars(results), paths[1])
    _scaling(plt, results["deliver"]["eps_by_workers"], results["relay"], paths[2])
    return paths


def _throughput(plt: Any, bars: Bars, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    names, values = zip(*bars, strict=True)
    colors = ["#888888" if "raw" in n or "Kafka" in n or "pgbench" in n else "#2b6cb0" for n in names]
    ax.barh(names, values, color=colors)
    ax.invert_yaxis()
    ax.set_xscale("log")  # the limits are ten to a hundred times the slowest stage
    ax.set_xlabel("records per second, log scale (grey: baselines of the same run)")
    ax.set_title("Throughput beside its baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _latency(plt: Any, bars: list[tuple[str, float, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    names = [b[0] for b in bars]
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], width=0.4, label="p99")
    ax.set_xticks(list(xs), names)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds (log scale)")
    ax.set_title("Latency, p50 and p99")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scaling(plt: Any, by_workers: dict[str, float], relay: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    workers = sorted(by_workers, key=int)
    left.bar(range(len(workers)), [by_workers[w] for w in workers], color="#2b6cb0", tick_label=workers)
    left.set_xlabel("delivery processes in one consumer group")
    left.set_ylabel("notifications per second")
    right.bar([0, 1], [relay["drain_eps_1"], relay["drain_eps_3"]], color="#2b6cb0", tick_label=["1", "3"])
    right.set_xlabel("relays draining one outbox")
    right.set_ylabel("events per second")
    fig.suptitle("Scaling out on one machine")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
