"""The proving tools' commands: `herald simulator`, `herald demo`, `herald chaos`, `herald bench`.

The `herald` CLI (`herald.ops.cli`) adds them through the `herald.commands` entry point where
this package is installed; production code never imports it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from herald.infra.settings import Settings

if TYPE_CHECKING:
    from herald.infra.services import Endpoints


# Not imported from herald.ops.cli: run as `python -m herald.ops.cli` (as child processes are),
# that module is `__main__`, and importing it again would load these commands in a loop.
console = Console(stderr=True)


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]  # set by the CLI's callback


def end_cleanly_on_sigterm() -> None:
    """SIGTERM ends a proving tool as Ctrl-C does, through its cleanups. Ended by the default
    action, a `herald bench streams` left its stream processors and the services it started
    running; once the broker was stopped, one processor spun at a third of a core."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def register(app: typer.Typer) -> None:
    """Add the proving tools' commands to the `herald` CLI."""
    app.command()(simulator)
    app.command()(demo)
    app.command()(chaos)
    app.add_typer(bench, name="bench")


def simulator(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="whatsapp (a gateway instance), email (an HTTP email API), "
                                           "smtp (an SMTP server) or webhook (merchant endpoints)")],
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
    smtp_port: Annotated[int, typer.Option(
        help="smtp: the SMTP server's port (PORT serves its control API).")] = 0,
) -> None:
    """Run a provider simulator on HOST:PORT (its control API under /_sim/)."""
    from herald.infra.exit_deadline import serve_http
    from herald.infra.services import resolve_endpoints
    from herald.proving.simulators.provider import create_simulator
    from herald.proving.simulators.reports import ReportTarget
    from herald.schemas.catalog import GATEWAY_OBSERVATIONS, qualified

    settings = _settings(ctx)
    name = name or f"{kind}-{port}"
    store_path = store or settings.home / "simulators" / f"{kind}.sqlite"
    if kind in ("smtp", "webhook"):
        serve_http(_receiver(kind, store_path, host, smtp_port), f"simulator {kind}", host, port,
                   settings.shutdown_timeout_s, log_level="warning", access_log=False)
        return
    if kind == "whatsapp" and sessions_file is None:
        sessions_file = settings.home / "simulators" / f"{name}.sessions.json"
    report = None
    if report_interval_s > 0:
        report = ReportTarget(resolve_endpoints(settings, need_database=False).kafka_bootstrap,
                              qualified(GATEWAY_OBSERVATIONS, settings.namespace),
                              advertised_url or f"http://{host}:{port}", report_interval_s)
        _reports_on_the_registry(settings, report.topic)
    app_ = create_simulator(kind, store_path, name=name, sessions_file=sessions_file,
                            forget_sessions=forget_sessions, report=report)
    serve_http(app_, f"simulator {kind}", host, port, settings.shutdown_timeout_s, log_level="warning",
               access_log=False)


def _receiver(kind: str, store_path: Path, host: str, smtp_port: int) -> Any:
    from herald.proving.simulators.smtp_sink import create_smtp_sink
    from herald.proving.simulators.webhook_receiver import create_webhook_receiver

    if kind == "webhook":
        return create_webhook_receiver(store_path)
    if not smtp_port:
        raise typer.BadParameter("an smtp simulator needs --smtp-port", param_hint="--smtp-port")
    return create_smtp_sink(store_path, host, smtp_port)


def _reports_on_the_registry(settings: Settings, topic: str) -> None:
    """The id of the reports' schema, as a gateway would learn it: from the registry, under the
    observations topic's subject (provisioned by `herald up`)."""
    from herald.infra.schema_registry import connect_schema_registry, registry_client
    from herald.infra.services import resolve_registry_url
    from herald.schemas.catalog import TopicSpec

    reports = TopicSpec(topic, 1, "delete", -1, "gateway instance", "herald.GatewayObservation")
    connect_schema_registry(registry_client(resolve_registry_url(settings)), (reports,))


def demo(
    ctx: typer.Context,
    example: Annotated[str, typer.Option(
        help="The example catalog to play: registrations (seeds 000, 002, 004), tasks (seed 001) or "
             "payments (seed 003).")
    ] = "registrations",
    registrations: Annotated[int, typer.Option(help="How many registrations to verify.")] = 1000,
    tasks: Annotated[int, typer.Option(help="tasks: how many tasks to assign.")] = 400,
    payments: Annotated[int, typer.Option(help="payments: how many payments to settle.")] = 500,
    outage_s: Annotated[float, typer.Option(help="tasks: how long the broker is stopped mid-run.")] = 15.0,
    timeout_s: Annotated[float, typer.Option(help="Give up waiting for delivery after this.")] = 300,
    rate: Annotated[float, typer.Option(help="Registrations per second; 0 writes a burst.")] = 0.0,
    faults: Annotated[bool, typer.Option(
        help="Inject 10% transient provider failures and a gateway instance crash.")] = True,
) -> None:
    """Run the whole pipeline on the embedded default and report what the providers received."""
    end_cleanly_on_sigterm()
    if example == "payments":
        from herald.proving.demo_payments import print_payments_report, run_payments_demo

        paid = run_payments_demo(_settings(ctx), payments, timeout_s)
        print_payments_report(paid)
        if paid.lost or paid.duplicates or paid.writer_errors or paid.early_retries or paid.bad_signatures:
            raise typer.Exit(1)
        return
    if example == "tasks":
        from herald.proving.demo_tasks import print_tasks_report, run_tasks_demo

        outcome = run_tasks_demo(_settings(ctx), tasks, timeout_s, outage_s)
        print_tasks_report(outcome)
        if outcome.lost or outcome.duplicates or outcome.writer_errors:
            raise typer.Exit(1)
        return
    if example != "registrations":
        raise typer.BadParameter(f"no example {example!r}; known: registrations, tasks",
                                 param_hint="--example")
    from herald.proving.demo import print_report, run_demo

    result = run_demo(_settings(ctx), registrations, timeout_s, rate, faults)
    print_report(result)
    if result.lost or result.duplicates:
        raise typer.Exit(1)


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
    end_cleanly_on_sigterm()
    from herald.proving.chaos import ChaosPlan
    from herald.proving.chaos_faults import SCENARIOS
    from herald.proving.chaos_suite import failed, print_table, run_chaos

    names = scenario or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    plan = ChaosPlan(rate=rate, warmup_s=warmup_s, outage_s=outage_s, cooldown_s=cooldown_s)
    outcomes = run_chaos(_settings(ctx), names, plan, lambda outcome: print(outcome.json_line(), flush=True))
    print_table(outcomes, plan)
    if failed(outcomes):
        raise typer.Exit(1)




bench = typer.Typer(help="Benchmarks that measure their own baselines in the same run.")


@contextmanager
def _prepared(ctx: typer.Context) -> Iterator[tuple[Settings, Endpoints]]:
    """Settings, and the services started (if embedded), migrated and provisioned; what this
    started is stopped again at the end, as `make demo` does: a bench leaves a home as it found it.
    The benches play the registrations example: its catalog, whatever HERALD_CATALOG says."""
    import dataclasses

    from herald.infra.catalogs import example_catalog_path, open_catalog
    from herald.infra.services import start_services, stop_services
    from herald.ops.bootstrap import prepare

    end_cleanly_on_sigterm()
    settings = dataclasses.replace(_settings(ctx), catalog=example_catalog_path("registrations"))
    catalog = open_catalog(settings.catalog, os.environ)
    _endpoints, started = start_services(settings)
    try:
        yield settings, prepare(settings, catalog)
    finally:
        stopped = stop_services(settings, only=started)
        if stopped:
            console.print(f"stopped what this started: {', '.join(stopped)}")



@bench.command("relay")
def bench_relay(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Outbox rows pre-filled for each drain run.")] = 200_000,
    keys: Annotated[int, typer.Option(help="Distinct aggregate keys among them.")] = 20_000,
    seconds: Annotated[float, typer.Option(help="Length of the sustained and the paced runs.")] = 10.0,
) -> None:
    """Relay drain rate (1 and 3 relays), sustained rate and commit->ack latency, against baselines."""
    from herald.proving.bench_relay import print_bench_relay, run_bench_relay

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
    channel: Annotated[str | None, typer.Option(
        help="email-smtp or webhook: that kind's delivery rate against its raw client (aiosmtplib, "
             "httpx) at the same server, instead of the gateway/email phases.")] = None,
    messages: Annotated[int, typer.Option(help="With --channel: messages in each of the two runs.")] = 5000,
) -> None:
    """Campaign time, commit->provider latency, scaling and failover, against the raw provider rate."""
    from herald.proving.bench_deliver import print_bench_deliver, run_bench_deliver

    if channel is not None:
        _bench_channel(ctx, channel, messages, latency_ms)
        return
    with _prepared(ctx) as (settings, endpoints):
        print_bench_deliver(run_bench_deliver(settings, endpoints.kafka_bootstrap, endpoints.database_url,
                                              campaign, rate, seconds, latency_ms, scale_records))


def _bench_channel(ctx: typer.Context, channel: str, messages: int, latency_ms: float) -> None:
    from herald.proving.bench_channels import KINDS, print_bench_channel, run_bench_channel

    if channel not in KINDS:
        raise typer.BadParameter(f"one of {', '.join(KINDS)}", param_hint="--channel")
    with _prepared(ctx) as (settings, endpoints):
        print_bench_channel(run_bench_channel(settings, endpoints.kafka_bootstrap, channel, messages,
                                              latency_ms))


@bench.command("streams")
def bench_streams(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Registration events in the processors' backlog.")] = 100_000,
    alert_events: Annotated[int, typer.Option(help="Verified payments in the alert run (half delivered).")
                            ] = 1_000,
    rate: Annotated[float, typer.Option(help="Verified payments per second in the alert run.")] = 200.0,
    sla_s: Annotated[float, typer.Option(help="The e-ticket SLA in the alert run, in seconds.")] = 5.0,
    alone: Annotated[bool, typer.Option(help="Also run each processor alone through the backlog first.")
                     ] = True,
) -> None:
    """Router and detector events/s against the raw consume rate; deadline -> alert delay."""
    from herald.proving.bench_streams import print_bench_streams, run_bench_streams

    with _prepared(ctx) as (settings, endpoints):
        print_bench_streams(run_bench_streams(settings, endpoints.kafka_bootstrap, events, alert_events,
                                              rate, sla_s, alone))


@bench.command("e2e")
def bench_e2e(
    ctx: typer.Context,
    registrations: Annotated[int, typer.Option(help="Registrations verified, paced at --rate.")] = 1_000,
    rate: Annotated[float, typer.Option(help="Registrations per second (three events each).")] = 100.0,
) -> None:
    """Each hop's latency (relay, router, delivery) through the whole pipeline, paced, no faults."""
    from herald.proving.bench_e2e import print_bench_e2e, run_bench_e2e

    with _prepared(ctx) as (settings, endpoints):
        print_bench_e2e(run_bench_e2e(settings, endpoints, registrations, rate))


@bench.command("baselines")
def bench_baselines(
    ctx: typer.Context,
    records: Annotated[int, typer.Option(help="Records Kafka's ProducerPerformance sends.")] = 500_000,
    seconds: Annotated[float, typer.Option(help="How long pgbench inserts outbox rows.")] = 10.0,
) -> None:
    """The limits: Kafka's ProducerPerformance on the same broker, pgbench on the same database."""
    from herald.proving.bench_baselines import print_baselines, run_baselines

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
    from herald.infra.settings import child_environ
    from herald.proving.bench_report import run_report

    with _prepared(ctx) as (settings, _endpoints):  # started once here, reused by each bench
        written = run_report(out, quick, child_environ(settings, os.environ))
    console.print(f"wrote {written} and its plots")
