"""`herald`: the one entry point of every Herald process.

A thin shell: it reads settings from the environment once, here, and calls one function.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from herald.infra.exit_deadline import arm_exit_deadline
from herald.infra.logs import configure_logging
from herald.infra.processes import ServiceError
from herald.infra.settings import Settings, SettingsError, documented_settings

if TYPE_CHECKING:
    from herald.infra.services import Endpoints

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Herald: notifications that are never lost, on Apache Kafka.")
console = Console(stderr=True)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


@app.callback()
def _load_settings(ctx: typer.Context) -> None:
    try:
        ctx.obj = Settings.from_environ(os.environ)
    except SettingsError as exc:
        console.print(f"[red]settings error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        configure_logging(ctx.obj.log_level, ctx.obj.log_format)
    except ValueError as exc:
        console.print(f"[red]settings error:[/red] HERALD_LOG_FORMAT / HERALD_LOG_LEVEL: {exc}")
        raise typer.Exit(2) from None


def stop_on_signals(settings: Settings) -> threading.Event:
    """An event set by SIGTERM or SIGINT, for a graceful shutdown, bounded by the settings."""
    stop = threading.Event()

    def on_signal(number: int, _frame: object) -> None:
        stop.set()
        arm_exit_deadline(settings.shutdown_timeout_s, signal.Signals(number).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return stop


@app.command()
def up(
    ctx: typer.Context,
    brokers: Annotated[int | None, typer.Option(
        min=1, max=5, help="Embedded Kafka brokers: 3 makes a cluster with replication factor 3 and "
                           "min ISR 2 (default HERALD_KAFKA_BROKERS, 1).")] = None,
) -> None:
    """Start the embedded Kafka and PostgreSQL (unless HERALD_* points elsewhere), migrate, provision."""
    import dataclasses

    from herald.infra.bootstrap import prepare

    settings = _settings(ctx)
    endpoints = prepare(settings if brokers is None else dataclasses.replace(settings, kafka_brokers=brokers))
    console.print(f"kafka    {endpoints.kafka_bootstrap}\npostgres {endpoints.database_url}")


@app.command()
def down(
    ctx: typer.Context,
    purge: Annotated[bool, typer.Option(help="Also delete their data (topics, database).")] = False,
) -> None:
    """Stop the embedded Kafka and PostgreSQL."""
    from herald.infra.services import purge_services, stop_services

    stopped = stop_services(_settings(ctx))
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    if purge:
        purge_services(_settings(ctx))
        console.print(f"deleted the embedded data under {_settings(ctx).home}")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
    kafka: Annotated[bool, typer.Option("--kafka", help="Print only Kafka's bootstrap address (exit 1 when "
                                                        "none runs), e.g. for KAFKA_BOOTSTRAP.")] = False,
) -> None:
    """Say what runs where: the services, then each stage (its members and lag, or relays)."""
    from herald.infra.bootstrap import kafka_if_known
    from herald.infra.status import pipeline_status

    if kafka:
        bootstrap = kafka_if_known(_settings(ctx))
        if bootstrap is None:
            console.print("[red]error:[/red] Kafka is not running: start it with `herald up`")
            raise typer.Exit(1)
        print(bootstrap)
        return
    report = pipeline_status(_settings(ctx))
    if as_json:
        print(json.dumps(report))
        return
    table = Table("service or stage", "state", "where", "lag")
    for row in report["services"]:  # type: ignore[attr-defined]
        table.add_row(row["service"], row["state"], row["where"], "")
    for row in report["stages"]:  # type: ignore[attr-defined]
        table.add_row(row["stage"], row["state"], row["where"], "" if row["lag"] is None else str(row["lag"]))
    Console().print(table)


@app.command()
def settings(ctx: typer.Context) -> None:
    """List every setting with its variable, default and meaning."""
    table = Table("variable", "default", "meaning")
    for row in documented_settings():
        table.add_row(*row)
    Console().print(table)


@app.command()
def relay(ctx: typer.Context) -> None:
    """Publish outbox rows to Kafka until stopped (SIGTERM: finish the batch, then exit)."""
    from herald.infra.bootstrap import run_relay

    run_relay(_settings(ctx), stop_on_signals(_settings(ctx)))


@app.command()
def ingest(ctx: typer.Context) -> None:
    """Serve POST /v1/events (signed HTTP ingest) on HERALD_INGEST_HOST:HERALD_INGEST_PORT."""
    from herald.infra.bootstrap import run_ingest

    run_ingest(_settings(ctx))


@app.command()
def api(
    ctx: typer.Context,
    openapi: Annotated[bool, typer.Option("--openapi", help="Print the OpenAPI document and exit.")] = False,
) -> None:
    """Serve the ops API and console on HERALD_API_HOST:HERALD_API_PORT (tokens: herald tokens)."""
    if openapi:
        from herald.infra.ops_api import Wiring, create_ops_api

        document = create_ops_api(Wiring(_settings(ctx), None, None)).openapi()  # type: ignore[arg-type]
        print(json.dumps(document, indent=2))
        return
    from herald.infra.bootstrap import run_api

    run_api(_settings(ctx))


@app.command()
def streams(
    ctx: typer.Context,
    processor: Annotated[str, typer.Option(
        help="router (registration events -> notification requests), missing (the missing-notification "
             "detector), sessions (the session reconciler) or status (per-minute outcome counts for "
             "analysts); each runs as its own Faust app and process.")] = "router",
) -> None:
    """Run one Faust stream processor."""
    from herald.infra.bootstrap import run_streams
    from herald.streams.app import PROCESSORS

    if processor not in PROCESSORS:
        console.print(f"[red]error:[/red] unknown processor {processor!r}; known: {', '.join(PROCESSORS)}")
        raise typer.Exit(2)
    run_streams(_settings(ctx), processor)


@app.command()
def deliver(
    ctx: typer.Context,
    channel: Annotated[str, typer.Option(help="whatsapp or email")],
    tier: Annotated[list[int] | None, typer.Option(
        help="Only this topic: 0 the requests, 1-3 a retry tier (repeatable); default all.")] = None,
    drain: Annotated[bool, typer.Option(help="Exit once the topics are drained.")] = False,
) -> None:
    """Run delivery workers of CHANNEL: one per topic, each a member of that topic's group."""
    from herald.infra.bootstrap import run_delivery

    run_delivery(_settings(ctx), channel, stop_on_signals(_settings(ctx)), drain,
                 tuple(tier) if tier else None)  # its stop line says what it did


@app.command()
def corrections(ctx: typer.Context) -> None:
    """Apply session corrections to the database: sessions delivery workers found on another
    gateway instance, and the session reconciler's mismatches (disconnect, reconnect, move)."""
    from herald.infra.bootstrap import run_corrections

    run_corrections(_settings(ctx), stop_on_signals(_settings(ctx)))  # its stop line says what it did


@app.command()
def simulator(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="whatsapp (a gateway instance) or email")],
    port: Annotated[int, typer.Option(help="Port to listen on.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    name: Annotated[str, typer.Option(help="Instance name, as it reports itself.")] = "",
    store: Annotated[Path | None, typer.Option(
        help="SQLite file of accepted messages, shared by a network's instances; "
             "default <home>/simulators/<kind>.sqlite.")] = None,
    sessions_file: Annotated[Path | None, typer.Option(
        help="whatsapp: keep this instance's sessions here, so they survive a restart; default "
             "<home>/simulators/<name>.sessions.json.")] = None,
    forget_sessions: Annotated[bool, typer.Option(
        help="whatsapp: start without the sessions in --sessions-file (a gateway that lost them).")] = False,
    report_interval_s: Annotated[float, typer.Option(
        help="whatsapp: report the sessions held to gateway.observations this often; 0: never.")] = 0.0,
    advertised_url: Annotated[str, typer.Option(
        help="whatsapp: the base URL sessions name this instance by; default http://HOST:PORT.")] = "",
) -> None:
    """Run a provider simulator on HOST:PORT."""
    from herald.infra.exit_deadline import serve_http
    from herald.infra.services import resolve_endpoints
    from herald.infra.simulators.provider import create_simulator
    from herald.infra.simulators.reports import ReportTarget
    from herald.schemas.catalog import GATEWAY_OBSERVATIONS, qualified

    settings = _settings(ctx)
    name = name or f"{kind}-{port}"
    store_path = store or settings.home / "simulators" / f"{kind}.sqlite"
    if kind == "whatsapp" and sessions_file is None:
        sessions_file = settings.home / "simulators" / f"{name}.sessions.json"
    report = None
    if report_interval_s > 0:
        report = ReportTarget(resolve_endpoints(settings, need_database=False).kafka_bootstrap,
                              qualified(GATEWAY_OBSERVATIONS, settings.namespace),
                              advertised_url or f"http://{host}:{port}", report_interval_s)
    app_ = create_simulator(kind, store_path, name=name, sessions_file=sessions_file,
                            forget_sessions=forget_sessions, report=report)
    serve_http(app_, f"simulator {kind}", host, port, settings.shutdown_timeout_s, log_level="warning",
               access_log=False)


@app.command()
def demo(
    ctx: typer.Context,
    registrations: Annotated[int, typer.Option(help="How many registrations to verify.")] = 1000,
    timeout_s: Annotated[float, typer.Option(help="Give up waiting for delivery after this.")] = 300,
    rate: Annotated[float, typer.Option(help="Registrations per second; 0 writes a burst.")] = 0.0,
    faults: Annotated[bool, typer.Option(
        help="Inject 10% transient provider failures and a gateway instance crash.")] = True,
) -> None:
    """Run the whole pipeline on the embedded default and report what the providers received."""
    from herald.infra.demo import print_report, run_demo

    result = run_demo(_settings(ctx), registrations, timeout_s, rate, faults)
    print_report(result)
    if result.lost or result.duplicates:
        raise typer.Exit(1)


@app.command()
def chaos(
    ctx: typer.Context,
    scenario: Annotated[list[str] | None, typer.Option(
        help="Run only these (repeatable); all of them by default, in order.")] = None,
    rate: Annotated[float, typer.Option(help="Registrations per second, all through each run.")] = 20.0,
    outage_s: Annotated[float, typer.Option(help="How long the broker and the provider stay down.")] = 60.0,
    warmup_s: Annotated[float, typer.Option(help="Load before each fault.")] = 10.0,
    cooldown_s: Annotated[float, typer.Option(help="Load after each fault cleared.")] = 15.0,
) -> None:
    """Kill and stop parts of the pipeline under load; count lost and doubled at the providers."""
    from herald.infra.chaos import ChaosPlan
    from herald.infra.chaos_faults import SCENARIOS
    from herald.infra.chaos_suite import failed, print_table, run_chaos

    names = scenario or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    plan = ChaosPlan(rate=rate, warmup_s=warmup_s, outage_s=outage_s, cooldown_s=cooldown_s)
    outcomes = run_chaos(_settings(ctx), names, plan, lambda outcome: print(outcome.json_line(), flush=True))
    print_table(outcomes, plan)
    if failed(outcomes):
        raise typer.Exit(1)


from herald.infra.cli_dlq import dlq  # noqa: E402  (after `app`: its commands import from here)
from herald.infra.cli_repairs import resend_missing, sessions, tokens  # noqa: E402

app.add_typer(dlq, name="dlq")
app.add_typer(sessions, name="sessions")
app.add_typer(tokens, name="tokens")
app.command("resend-missing")(resend_missing)

outbox = typer.Typer(help="The transactional outbox: backlog and relay leases.")
app.add_typer(outbox, name="outbox")


@outbox.command("status")
def outbox_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts and probes.")] = False,
) -> None:
    """Rows waiting, the oldest one's age, and which relay leases which shards."""
    from herald.infra.bootstrap import outbox_status as read_status

    status = read_status(_settings(ctx))
    if as_json:
        print(json.dumps(status))
        return
    table = Table("measure", "value", title="outbox")
    table.add_row("rows waiting", f"{status['rows']:,}")
    table.add_row("oldest waiting", f"{status['oldest_age_s']:.1f} s")
    table.add_row("relays", str(status["relays"]))
    table.add_row("shards leased", f"{status['shards_leased']} of {status['shards']}")
    for pid, shards in status["leases"].items():
        table.add_row(f"relay backend {pid}", f"{len(shards)} shards")
    Console().print(table)


@app.command()
def health(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts and probes.")] = False,
) -> None:
    """The System Health widget: broker, database, outbox, dead letters, missing notifications,
    consumer lag. Exit status 1 when unhealthy, for cron and probes."""
    from herald.infra.bootstrap import read_health

    report = read_health(_settings(ctx))
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        table = Table("check", "state", "detail", title=f"herald health: {report.state}")
        for check in report.checks:
            table.add_row(check.name, f"[{colours[check.state]}]{check.state}[/]", check.detail)
        Console().print(table)
    if not report.healthy:
        raise typer.Exit(1)


bench = typer.Typer(help="Benchmarks that measure their own baselines in the same run.")


@contextmanager
def _prepared(ctx: typer.Context) -> Iterator[tuple[Settings, Endpoints]]:
    """Settings, and the services started (if embedded), migrated and provisioned; what this
    started is stopped again at the end, as `make demo` does: a bench leaves a home as it found it."""
    from herald.infra.bootstrap import prepare
    from herald.infra.services import start_services, stop_services

    settings = _settings(ctx)
    _endpoints, started = start_services(settings)
    try:
        yield settings, prepare(settings)
    finally:
        stopped = stop_services(settings, only=started)
        if stopped:
            console.print(f"stopped what this started: {', '.join(stopped)}")


app.add_typer(bench, name="bench")


@bench.command("relay")
def bench_relay(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Outbox rows pre-filled for each drain run.")] = 200_000,
    keys: Annotated[int, typer.Option(help="Distinct aggregate keys among them.")] = 20_000,
    seconds: Annotated[float, typer.Option(help="Length of the sustained and the paced runs.")] = 10.0,
) -> None:
    """Relay drain rate (1 and 3 relays), sustained rate and commit->ack latency, against baselines."""
    from herald.infra.bench_relay import print_bench_relay, run_bench_relay

    with _prepared(ctx) as (settings, endpoints):
        print_bench_relay(run_bench_relay(settings, endpoints.kafka_bootstrap, endpoints.database_url,
                                          events, keys, seconds))


@bench.command("deliver")
def bench_deliver(
    ctx: typer.Context,
    campaign: Annotated[int, typer.Option(help="Notifications in the campaign (one transaction).")] = 10_000,
    rate: Annotated[float, typer.Option(help="Notifications per second of the latency run.")] = 500.0,
    seconds: Annotated[float, typer.Option(help="Length of the latency run.")] = 10.0,
    latency_ms: Annotated[float, typer.Option(help="How long the simulators take to answer.")] = 20.0,
    scale_records: Annotated[int, typer.Option(help="Notifications per scaling run.")] = 6000,
) -> None:
    """Campaign time, commit->provider latency, scaling and failover, against the raw provider rate."""
    from herald.infra.bench_deliver import print_bench_deliver, run_bench_deliver

    with _prepared(ctx) as (settings, endpoints):
        print_bench_deliver(run_bench_deliver(settings, endpoints.kafka_bootstrap, endpoints.database_url,
                                              campaign, rate, seconds, latency_ms, scale_records))


@bench.command("streams")
def bench_streams(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Registration events in the processors' backlog.")] = 20_000,
    alert_events: Annotated[int, typer.Option(help="Verified payments in the alert run (half delivered).")
                            ] = 1_000,
    rate: Annotated[float, typer.Option(help="Verified payments per second in the alert run.")] = 200.0,
    sla_s: Annotated[float, typer.Option(help="The e-ticket SLA in the alert run, in seconds.")] = 5.0,
) -> None:
    """Router and detector events/s against the raw consume rate; deadline -> alert delay."""
    from herald.infra.bench_streams import print_bench_streams, run_bench_streams

    with _prepared(ctx) as (settings, endpoints):
        print_bench_streams(run_bench_streams(settings, endpoints.kafka_bootstrap, events, alert_events,
                                              rate, sla_s))


@bench.command("baselines")
def bench_baselines(
    ctx: typer.Context,
    records: Annotated[int, typer.Option(help="Records Kafka's ProducerPerformance sends.")] = 500_000,
    seconds: Annotated[float, typer.Option(help="How long pgbench inserts outbox rows.")] = 10.0,
) -> None:
    """The limits: Kafka's ProducerPerformance on the same broker, pgbench on the same database."""
    from herald.infra.bench_baselines import print_baselines, run_baselines

    with _prepared(ctx) as (settings, endpoints):
        print_baselines(run_baselines(settings, endpoints.kafka_bootstrap, endpoints.database_url, records,
                                      seconds))


@bench.command("report")
def bench_report(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The Markdown report; plots go beside it.")] = Path(
        "docs/benchmarks.md"),
    quick: Annotated[bool, typer.Option(help="Small sizes: proves the report, measures little.")] = False,
) -> None:
    """Baselines, relay, delivery and streams benches in one run, written to docs/benchmarks.md."""
    from herald.infra.bench_report import run_report
    from herald.infra.settings import child_environ

    with _prepared(ctx) as (settings, _endpoints):  # started once here, reused by each bench
        written = run_report(out, quick, child_environ(settings, os.environ))
    console.print(f"wrote {written} and its plots")


def main() -> None:
    try:
        app()
    except ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except SettingsError as exc:  # a setting only checked where it is used (e.g. retry policies)
        console.print(f"[red]settings error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
