"""docs/benchmarks.md from the benches' JSON lines: every figure beside its same-run baseline,
each table naming its command, and the plots written as PNG files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from herald.proving.bench_plots import write_plots
from herald.proving.bench_report import bench_commands, render_report

RESULTS = {
    "baselines": {"record_size": 124, "producer_perf_eps": 40000.0, "producer_perf_p50_ms": 6.0,
                  "producer_perf_p99_ms": 40.0, "pgbench_clients": 4, "pgbench_rows_per_tx": 50,
                  "pgbench_rows_per_s": 80000.0},
    "relay": {"raw_producer_eps": 10000.0, "raw_claim_eps": 100000.0, "drain_eps_1": 30000.0,
              "drain_eps_3": 27000.0, "sustained_eps": 8000.0, "paced_eps": 1000.0, "p50_ms": 1.5,
              "p99_ms": 12.0, "order_kept": True},
    "deliver": {"raw_provider_eps": 2500.0, "campaign": 10000, "campaign_10k_s": 5.0, "paced_eps": 500.0,
                "p50_ms": 25.0, "p99_ms": 40.0, "latency_ms": 20.0, "campaign_cpu_ms_per_msg": 1.1,
                "failover_s": 5.5, "lost": 0, "duplicates": 0,
                "eps_by_workers": {"1": 500.0, "2": 750.0, "4": 1000.0}},
    "streams": {"raw_consume_eps": 2000.0, "decoding_consume_eps": 1900.0, "router_eps": 1200.0,
                "missing_eps": 1100.0, "sessions_eps": 1000.0, "events_per_s": 1000.0,
                "router_alone_eps": 950.0, "missing_alone_eps": 190.0, "sessions_alone_eps": 180.0,
                "cpu_ms_per_event_alone": {"router": 0.04, "missing": 0.1, "sessions": 0.12},
                "alert_delay_p50_s": 0.6, "alert_delay_p99_s": 2.5, "false_alerts": 0, "alerts_missed": 0},
    "e2e": {"registrations": 1000, "rate": 100.0, "lost": 0, "duplicates": 0, "p50_ms": 36.0, "p99_ms": 160.0,
            "hops": {"relay": {"p50_ms": 10.0, "p99_ms": 60.0}, "router": {"p50_ms": 8.0, "p99_ms": 40.0},
                     "delivery": {"p50_ms": 18.0, "p99_ms": 80.0}},
            "raw_hop": {"p50_ms": 4.0, "p99_ms": 20.0}, "goal_p50_ms": 40.0, "goal_p99_ms": 150.0,
            "achieved_rate": 85.0, "warm_up": 300},
    "deliver-email-smtp": {"channel": "email-smtp", "messages": 5000, "latency_ms": 20.0,
                           "raw_client_eps": 200.0, "herald_eps": 150.0, "ratio": 0.75, "lost": 0,
                           "duplicates": 0},
    "deliver-webhook": {"channel": "webhook", "messages": 5000, "latency_ms": 20.0, "raw_client_eps": 150.0,
                        "raw_transport_eps": 1000.0, "herald_eps": 450.0, "ratio": 3.0,
                        "ratio_to_transport": 0.45, "lost": 0, "duplicates": 1},
}
SHELLS = {c.name: c.shell for c in bench_commands(quick=False)}


def render() -> str:
    return render_report(RESULTS, SHELLS, "2 CPUs", datetime(2026, 11, 23, tzinfo=UTC),
                         [Path("benchmarks/throughput.png")])


def test_each_figure_stands_beside_its_baseline_with_the_ratio():
    report = render()
    assert "| outbox drained by 1 relay | 30,000 events/s | ProducerPerformance | 0.75 |" in report
    assert ("| 4 writers through emit() while 1 relay publishes | 8,000 events/s | pgbench inserts "
            "| 0.10 |") in report
    assert ("| campaign of 10,000: commit -> last delivery | 5.00 s (2,000 msg/s) "
            "| raw provider rate 2,500 msg/s | 0.80 |") in report
    assert "| through all three (the slowest) | 1,000 events/s | raw consume | 0.50 |" in report


def test_each_processor_alone_stands_beside_the_decoding_rate_without_a_goal_of_its_own():
    report = render()
    assert ("|   the same, alone on the machine, 0.040 ms CPU/event | 950 events/s "
            "| decoding consume (alone too) | 0.50 |") in report
    assert ("|   the same, alone on the machine, 0.100 ms CPU/event | 190 events/s "
            "| decoding consume (alone too) | 0.10 |") in report
    assert report.count("alone on the machine") == 3


def test_the_e2e_table_names_each_hop_against_one_bare_kafka_hop_and_the_goal():
    report = render()
    assert "Command: `herald bench e2e`" in report
    assert "| event -> request (router), p50 / p99 | 8 / 40 ms | one bare hop | 2.00 / 2.00 |" in report
    assert ("| end to end, verify commit -> provider, p50 / p99 (1,000 registrations at 100/s, "
            "85/s achieved, after 300 not counted) | 36 / 160 ms "
            "| goal ≤ 40 / 150 ms | missed |") in report


def test_the_channel_table_holds_each_kind_against_its_raw_client():
    report = render()
    assert ("Command: `herald bench deliver --channel email-smtp; herald bench deliver --channel webhook`"
            in report)
    assert ("| email-smtp: one delivery process, templates rendered | 150 msg/s "
            "| aiosmtplib, same connections 200 msg/s | 0.75 |") in report
    assert ("| webhook: one delivery process, signed | 450 msg/s "
            "| httpx, same concurrency 150 msg/s | 3.00 |") in report
    assert "that transport, no Kafka 1,000 msg/s | 0.45 |" in report
    assert "| lost / duplicated (counted at the servers) | 0 / 1 |" in report


def test_the_scaling_table_holds_the_ratios_to_one_process_and_one_relay():
    report = render()
    assert "| one consumer group (email), 4 processes | 1,000 msg/s | 1 process | 2.00 |" in report
    assert "| relays draining one outbox, 3 | 27,000 events/s | 1 relay | 0.90 |" in report


def test_each_table_names_the_command_a_reader_reruns_and_a_missed_goal_says_so():
    report = render()
    for bench in ("baselines", "relay", "deliver", "streams"):
        assert f"Command: `herald bench {bench}`" in report
    assert "| goal p99 <= 2 s | missed |" in report
    # A ratio against its goal keeps three decimals: 0.146 must not round to a met 0.15.
    assert "| decoding consume (goal ≥ 0.15) | 0.632 (met) |" in report
    assert "| decoding consume (goal ≥ 0.05) | 0.579 (met) |" in report
    assert "![throughput](benchmarks/throughput.png)" in report


def test_the_plots_are_png_files(tmp_path):
    paths = write_plots(RESULTS, tmp_path)
    assert [p.name for p in paths] == ["throughput.png", "latency.png", "scaling.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
