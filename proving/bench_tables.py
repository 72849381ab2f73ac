"""The tables of docs/benchmarks.md: each figure, its baseline from the same run, the ratio
and the command that measured it (from the bench commands' JSON results)."""

from __future__ import annotations

import os
from typing import Any

from herald.proving.bench_streams import GOALS, PROCESSOR_NAMES
from herald.proving.demo_hops import HOP_NAMES

Row = tuple[str, str, str, str]  # figure, value, baseline, ratio


def _table(title: str, command: str, rows: list[Row], note: str = "") -> list[str]:
    lines = [f"## {title}", "", f"Command: `{command}`", ""]
    lines += ["| figure | value | baseline (same run) | ratio |", "|---|---:|---|---:|"]
    lines += [f"| {figure} | {value} | {baseline} | {ratio} |" for figure, value, baseline, ratio in rows]
    return [*lines, "", *([note, ""] if note else [])]


def _ratio(value: float, baseline: float) -> str:
    if baseline <= 0:
        return "-"
    ratio = value / baseline
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"  # two digits that say something


def _against_goal(value: float, baseline: float, goal: float) -> str:
    """Three decimals and the verdict: rounded to two, 0.146 would read as a met 0.15."""
    ratio = value / baseline if baseline > 0 else 0.0
    return f"{ratio:.3f} ({'met' if ratio >= goal else 'missed'})"


def _eps(value: float, unit: str = "events/s") -> str:
    return f"{value:,.0f} {unit}"


def baseline_rows(b: dict[str, Any]) -> list[Row]:
    return [
        (f"Kafka ProducerPerformance: {b['record_size']}-byte records, acks=all, idempotent, lz4",
         _eps(b["producer_perf_eps"], "records/s"), "the broker's publishing limit", ""),
        ("  its latency p50 / p99 (send -> ack, all out)",
         f"{b['producer_perf_p50_ms']:.0f} / {b['producer_perf_p99_ms']:.0f} ms", "", ""),
        (f"pgbench: outbox inserts, {b['pgbench_clients']} clients x {b['pgbench_rows_per_tx']} rows per "
         f"transaction", _eps(b["pgbench_rows_per_s"], "rows/s"), "the database's insert limit", ""),
    ]


def relay_rows(r: dict[str, Any], b: dict[str, Any]) -> list[Row]:
    perf, pg = float(b["producer_perf_eps"]), float(b["pgbench_rows_per_s"])
    perf_name, pg_name = "ProducerPerformance", "pgbench inserts"
    return [
        ("raw confluent-kafka producer (Python, no database)", _eps(r["raw_producer_eps"]),
         perf_name, _ratio(r["raw_producer_eps"], perf)),
        ("relay claim-and-remove statement alone (no Kafka)", _eps(r["raw_claim_eps"]),
         pg_name, _ratio(r["raw_claim_eps"], pg)),
        ("outbox drained by 1 relay", _eps(r["drain_eps_1"]), perf_name, _ratio(r["drain_eps_1"], perf)),
        ("outbox drained by 3 relays", _eps(r["drain_eps_3"]), perf_name, _ratio(r["drain_eps_3"], perf)),
        ("4 writers through emit() while 1 relay publishes", _eps(r["sustained_eps"]),
         pg_name, _ratio(r["sustained_eps"], pg)),
        (f"commit -> broker append at {r['paced_eps']:,.0f} events/s, p50 / p99",
         f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms", "ProducerPerformance p50 / p99 (all out)",
         f"{b['producer_perf_p50_ms']:.0f} / {b['producer_perf_p99_ms']:.0f} ms"),
        ("per-key order kept (3 relays)", str(r["order_kept"]), "", ""),
    ]


def delivery_rows(d: dict[str, Any]) -> list[Row]:
    raw = float(d["raw_provider_eps"])
    campaign_eps = d["campaign"] / d["campaign_10k_s"] if d["campaign_10k_s"] > 0 else 0.0
    rows: list[Row] = [
        (f"campaign of {d['campaign']:,}: commit -> last delivery", f"{d['campaign_10k_s']:.2f} s "
         f"({campaign_eps:,.0f} msg/s)", f"raw provider rate {raw:,.0f} msg/s", _ratio(campaign_eps, raw)),
        (f"commit -> provider at {d['paced_eps']:,.0f}/s, p50 / p99",
         f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f} ms",
         f"the provider's own answer time {d['latency_ms']:g} ms", ""),
        ("CPU of the whole machine per notification (campaign)",
         f"{d['campaign_cpu_ms_per_msg']:.2f} ms", "", ""),
        ("failover: kill -9 of one of two workers -> its partitions deliver again",
         f"{d['failover_s']:.2f} s", "", ""),
        ("lost / duplicated (counted at the simulators)", f"{d['lost']} / {d['duplicates']}", "", ""),
    ]
    return rows


def streams_rows(s: dict[str, Any]) -> list[Row]:
    raw, decoding = float(s["raw_consume_eps"]), float(s["decoding_consume_eps"])
    rows: list[Row] = [("decoding consume rate (Python, fastavro)", _eps(decoding),
                        f"raw consume {raw:,.0f} events/s", _ratio(decoding, raw))]
    cpu = s.get("cpu_ms_per_event", {})
    for name, label in PROCESSOR_NAMES.items():
        rows.append((f"{label}, {cpu.get(name, 0):.3f} ms CPU/event", _eps(s[f"{name}_eps"]),
                     f"decoding consume (goal ≥ {GOALS[name]})",
                     _against_goal(s[f"{name}_eps"], decoding, GOALS[name])))
        if f"{name}_alone_eps" in s:
            alone_cpu = s["cpu_ms_per_event_alone"][name]
            rows.append((f"  the same, alone on the machine, {alone_cpu:.3f} ms CPU/event",
                         _eps(s[f"{name}_alone_eps"]), "decoding consume (alone too)",
                         _ratio(s[f"{name}_alone_eps"], decoding)))
    rows += [("through all three (the slowest)", _eps(s["events_per_s"]), "raw consume",
              _ratio(s["events_per_s"], raw)),
             ("SLA deadline -> missing-notification alert, p50 / p99",
              f"{s['alert_delay_p50_s']:.2f} / {s['alert_delay_p99_s']:.2f} s", "goal p99 <= 2 s",
              "met" if s["alert_delay_p99_s"] <= 2 else "missed"),
             ("false alerts / alerts missed", f"{s['false_alerts']} / {s['alerts_missed']}", "", "")]
    return rows


def channel_rows(smtp: dict[str, Any], webhook: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [
        ("email-smtp: one delivery process, templates rendered", _eps(smtp["herald_eps"], "msg/s"),
         f"aiosmtplib, same connections {smtp['raw_client_eps']:,.0f} msg/s", f"{smtp['ratio']:.2f}"),
        ("webhook: one delivery process, signed", _eps(webhook["herald_eps"], "msg/s"),
         f"httpx, same concurrency {webhook['raw_client_eps']:,.0f} msg/s", f"{webhook['ratio']:.2f}"),
    ]
    if "raw_transport_eps" in webhook:
        rows.append(("webhook: the same, against Herald's own HTTP transport",
                     _eps(webhook["herald_eps"], "msg/s"),
                     f"that transport, no Kafka {webhook['raw_transport_eps']:,.0f} msg/s",
                     f"{webhook['ratio_to_transport']:.2f}"))
    rows.append(("lost / duplicated (counted at the servers)",
                 f"{smtp['lost'] + webhook['lost']} / {smtp['duplicates'] + webhook['duplicates']}", "", ""))
    return rows


def e2e_rows(e: dict[str, Any]) -> list[Row]:
    raw = e["raw_hop"]
    rows: list[Row] = [("one bare Kafka hop, produce (acks=all) -> read_committed consumer, p50 / p99",
                        _ms_pair(raw), "", "")]
    for hop, figures in e["hops"].items():
        ratios = f"{_ratio(figures['p50_ms'], raw['p50_ms'])} / {_ratio(figures['p99_ms'], raw['p99_ms'])}"
        rows.append((f"{HOP_NAMES[hop]}, p50 / p99", _ms_pair(figures), "one bare hop", ratios))
    achieved = f", {e['achieved_rate']:g}/s achieved" if e.get("achieved_rate") else ""
    achieved += f", after {e['warm_up']:,} not counted" if e.get("warm_up") else ""
    goal = f"goal ≤ {e['goal_p50_ms']:g} / {e['goal_p99_ms']:g} ms"
    rows += [(f"end to end, verify commit -> provider, p50 / p99 ({e['registrations']:,} registrations "
              f"at {e['rate']:g}/s{achieved})", _ms_pair(e), goal,
              "met" if e["p50_ms"] <= e["goal_p50_ms"] and e["p99_ms"] <= e["goal_p99_ms"] else "missed"),
             ("lost / duplicated (counted at the simulators)", f"{e['lost']} / {e['duplicates']}", "", "")]
    return rows


def _ms_pair(figures: dict[str, Any]) -> str:
    return f"{figures['p50_ms']:,.0f} / {figures['p99_ms']:,.0f} ms"


def scaling_rows(d: dict[str, Any], r: dict[str, Any]) -> list[Row]:
    by_workers = {int(k): float(v) for k, v in d["eps_by_workers"].items()}
    one = by_workers.get(1, 0.0)
    rows: list[Row] = [(f"one consumer group (email), {n} process{'es' if n > 1 else ''}", _eps(eps, "msg/s"),
                        "1 process", _ratio(eps, one)) for n, eps in sorted(by_workers.items())]
    rows += [("relays draining one outbox, 1", _eps(r["drain_eps_1"]), "1 relay", "1.00"),
             ("relays draining one outbox, 3", _eps(r["drain_eps_3"]), "1 relay",
              _ratio(r["drain_eps_3"], r["drain_eps_1"]))]
    return rows


def report_sections(results: dict[str, dict[str, Any]], shells: dict[str, str]) -> list[str]:
    b, r, d, s = results["baselines"], results["relay"], results["deliver"], results["streams"]
    scaling_note = (f"All processes share this machine's {os.cpu_count()} CPUs with the broker, the database "
                    "and the simulators: a ratio above 1 needs idle cores, so it levels off past that many "
                    "busy processes here; separate hosts would add more (operators.md, Scaling).")
    return [*_table("Baselines", shells["baselines"], baseline_rows(b)),
            *_table("Relay: outbox -> Kafka", shells["relay"], relay_rows(r, b)),
            *_table("Delivery: Kafka -> provider", shells["deliver"], delivery_rows(d)),
            *_table("Streams: router and detectors", shells["streams"], streams_rows(s)),
            *_table("End to end: each hop's latency", shells["e2e"], e2e_rows(results["e2e"]),
                    "From the records' own timestamps: the relay hop ends when the relay produces the "
                    "event, the router hop when the router produces the request, the delivery hop when the "
                    "provider simulator accepts it (docs/demo.md)."),
            *_table("Channels: SMTP and signed webhooks",
                    f"{shells['deliver-email-smtp']}; {shells['deliver-webhook']}",
                    channel_rows(results["deliver-email-smtp"], results["deliver-webhook"]),
                    f"The servers answer after {results['deliver-webhook']['latency_ms']:g} ms: the aiosmtpd "
                    "sink and the webhook receiver, which checks each signature with `standardwebhooks`."),
            *_table("Scaling", f"{shells['deliver']}; {shells['relay']}", scaling_rows(d, r), scaling_note)]
