"""`herald`: the one entry point of every Herald process.

A thin shell: it reads settings from the environment once, here, and calls one function.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from herald.infra.catalogs import open_catalog
from herald.infra.exit_deadline import arm_exit_deadline
from herald.infra.logs import configure_logging
from herald.infra.processes import ServiceError
from herald.infra.settings import Settings, SettingsError, documented_settings, settings_reference

if TYPE_CHECKING:
    from herald.schemas.catalog_model import Catalog

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


def process_catalog(ctx: typer.Context) -> Catalog:
    """The process's catalog (HERALD_CATALOG), read here, at its entry point; a catalog that
    does not check stops the process with every problem named, as `herald catalog check` does."""
    from herald.schemas.catalog_file import CatalogError

    try:
        return open_catalog(_settings(ctx).catalog, os.environ)
    except CatalogError as exc:
        for problem in exc.problems:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        console.print(f"[red]catalog error:[/red] {len(exc.problems)} problem(s); the catalog does not check")
        raise typer.Exit(2) from None


def trace_as(service: str) -> None:
    """Export this stage's OpenTelemetry spans when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    from herald.infra.tracing import start_tracing

    start_tracing(service, os.environ)


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
    """Install missing system packages, start the embedded Kafka, PostgreSQL and schema registry
    (unless HERALD_* points elsewhere), migrate, provision topics and schemas."""
    import dataclasses

    from herald.ops.bootstrap import prepare

    settings = _settings(ctx)
    if None in (settings.kafka_bootstrap, settings.database_url, settings.schema_registry_url):
        _install_system_packages(with_test_tools=False)
    catalog = process_catalog(ctx)
    endpoints = prepare(settings if brokers is None else dataclasses.replace(settings, kafka_brokers=brokers),
                        catalog)
    console.print(f"kafka    {endpoints.kafka_bootstrap}\npostgres {endpoints.database_url}\n"
                  f"registry {endpoints.schema_registry_url}")


@app.command("system-packages")
def system_packages(
    tests: Annotated[bool, typer.Option(
        "--tests", help="Also the suite's tools (a headless browser).")] = False,
) -> None:
    """Install the Debian packages the embedded services need (Java, Maven, PostgreSQL), saying what."""
    _install_system_packages(with_test_tools=tests)


def _install_system_packages(with_test_tools: bool) -> None:
    from herald.ops.system_setup import install_system_packages

    installed = install_system_packages(with_test_tools, say=console.print)
    console.print(f"system packages: installed {', '.join(installed)}" if installed
                  else "system packages: all present")


@app.command()
def down(
    ctx: typer.Context,
    purge: Annotated[bool, typer.Option(help="Also delete their data (topics, database).")] = False,
) -> None:
    """Stop what `herald run` runs, then the embedded schema registry, Kafka and PostgreSQL."""
    from herald.infra.services import purge_services, stop_services
    from herald.ops.run import stop_pipeline

    processes = stop_pipeline(_settings(ctx))
    if processes:
        console.print(f"stopped the pipeline's processes: {', '.join(processes)}")
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
    registry: Annotated[bool, typer.Option("--registry", help="Print only the schema registry's URL (exit 1 "
                                                              "when none answers), e.g. for "
                                                              "SCHEMA_REGISTRY_URL.")] = False,
) -> None:
    """Say what runs where: the services, then each stage (its members and lag, or relays)."""
    from herald.ops.bootstrap import kafka_if_known
    from herald.ops.status import pipeline_status

    if kafka:
        bootstrap = kafka_if_known(_settings(ctx))
        if bootstrap is None:
            console.print("[red]error:[/red] Kafka is not running: start it with `herald up`")
            raise typer.Exit(1)
        print(bootstrap)
        return
    if registry:
        _print_registry_url(_settings(ctx))
        return
    report = pipeline_status(_settings(ctx), process_catalog(ctx))
    if as_json:
        print(json.dumps(report))
        return
    table = Table("service or stage", "state", "where", "lag")
    for row in report["services"]:  # type: ignore[attr-defined]
        table.add_row(row["service"], row["state"], row["where"], "")
    for row in report["stages"]:  # type: ignore[attr-defined]
        table.add_row(row["stage"], row["state"], row["where"], "" if row["lag"] is None else str(row["lag"]))
    Console().print(table)
    if report["processes"]:
        _print_processes(report["processes"], report["stages"])  # type: ignore[arg-type]


def _print_processes(rows: list[dict[str, Any]], stages: list[dict[str, Any]]) -> None:
    lag = {row["stage"]: row["lag"] for row in stages}
    table = Table("process (herald run)", "state", "pid", "uptime", "restarts", "stage lag")
    for row in rows:
        uptime = "" if row["uptime_s"] is None else f"{row['uptime_s']:.0f} s"
        stage_lag = lag.get(row["stage"])
        table.add_row(row["process"], row["state"], str(row["pid"] or ""), uptime, str(row["restarts"]),
                      "" if stage_lag is None else str(stage_lag))
    Console().print(table)


def _print_registry_url(settings: Settings) -> None:
    from herald.infra.services import resolve_registry_url

    try:
        print(resolve_registry_url(settings))
    except ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def settings(
    ctx: typer.Context,
    markdown: Annotated[bool, typer.Option(
        "--markdown", help="The settings reference page, docs/settings.md, as Markdown.")] = False,
) -> None:
    """List every setting with its variable, default and meaning."""
    if markdown:
        sys.stdout.write(settings_reference())
        return
    table = Table("variable", "default", "meaning")
    for row in documented_settings():
        table.add_row(*row)
    Console().print(table)


@app.command()
def run(
    ctx: typer.Context,
    scale: Annotated[list[str] | None, typer.Option(
        help="STAGE=N: run N processes of a stage, e.g. deliver:email=3 (repeatable; stages as "
             "`herald status` names them).")] = None,
) -> None:
    """Run every process the catalog's pipeline needs, supervised, until Ctrl-C or SIGTERM: a
    process that exits is restarted with backoff; logs go to the terminal, prefixed, and to
    one file per process under HERALD_HOME/logs/run. `herald down` stops it from elsewhere."""
    from herald.infra.supervisor import live_pids, read_state
    from herald.ops.pipeline import pipeline_stages
    from herald.ops.run import parse_scale, run_pipeline, run_state_path

    settings, catalog = _settings(ctx), process_catalog(ctx)
    running = live_pids(read_state(run_state_path(settings))).get("supervisor")
    if running is not None:
        console.print(f"[red]error:[/red] `herald run` already runs here (pid {running}); "
                      "`herald down` stops it")
        raise typer.Exit(1)
    known = [stage.name for stage in pipeline_stages(catalog, settings.namespace, settings.streams_app_id)]
    try:
        counts = parse_scale(scale or [], known)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=False)
        raise typer.Exit(2) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the supervisor's own stop is bounded
        signal.signal(sig, lambda _number, _frame: stop.set())
    supervisor = run_pipeline(settings, catalog, counts, stop, echo=lambda line: print(line, flush=True))
    console.print(f"stopped {len(supervisor.children)} processes ({supervisor.restarts} restarts)")


@app.command()
def relay(ctx: typer.Context) -> None:
    """Publish outbox rows to Kafka until stopped (SIGTERM: finish the batch, then exit)."""
    from herald.ops.bootstrap import run_relay

    trace_as("herald-relay")
    run_relay(_settings(ctx), stop_on_signals(_settings(ctx)))


@app.command()
def ingest(ctx: typer.Context) -> None:
    """Serve POST /v1/events (signed HTTP ingest) on HERALD_INGEST_HOST:HERALD_INGEST_PORT."""
    from herald.ops.bootstrap import run_ingest

    trace_as("herald-ingest")
    run_ingest(_settings(ctx), process_catalog(ctx))


@app.command()
def api(
    ctx: typer.Context,
    openapi: Annotated[bool, typer.Option("--openapi", help="Print the OpenAPI document and exit.")] = False,
) -> None:
    """Serve the ops API and console on HERALD_API_HOST:HERALD_API_PORT (tokens: herald tokens)."""
    if openapi:
        from herald.ops.ops_api import Wiring, create_ops_api

        wiring = Wiring(_settings(ctx), process_catalog(ctx), None, None)  # type: ignore[arg-type]
        document = create_ops_api(wiring).openapi()
        print(json.dumps(document, indent=2))
        return
    from herald.ops.bootstrap import run_api

    run_api(_settings(ctx), process_catalog(ctx))


@app.command()
def streams(
    ctx: typer.Context,
    processor: Annotated[str, typer.Option(
        help="router (the catalog's events -> notification requests), missing (the missing-notification "
             "detector), sessions (the session reconciler) or status (per-minute outcome counts for "
             "analysts); each runs as its own process: the router as a transactional "
             "confluent-kafka loop, the others as Faust apps.")] = "router",
) -> None:
    """Run one stream processor."""
    from herald.ops.bootstrap import run_streams
    from herald.schemas.catalog import STREAM_PROCESSORS

    if processor not in STREAM_PROCESSORS:
        console.print(f"[red]error:[/red] unknown processor {processor!r}; known: "
                      f"{', '.join(STREAM_PROCESSORS)}")
        raise typer.Exit(2)
    if processor == "router":
        from herald.ops.bootstrap import run_router_stage

        trace_as("herald-router")
        run_router_stage(_settings(ctx), process_catalog(ctx), stop_on_signals(_settings(ctx)))
        return
    run_streams(_settings(ctx), process_catalog(ctx), processor)


@app.command()
def deliver(
    ctx: typer.Context,
    channel: Annotated[str, typer.Option(help="A channel of the catalog (`herald catalog show`).")],
    tier: Annotated[list[int] | None, typer.Option(
        help="Only this topic: 0 the requests, 1-3 a retry tier (repeatable); default all.")] = None,
    drain: Annotated[bool, typer.Option(help="Exit once the topics are drained.")] = False,
) -> None:
    """Run delivery workers of CHANNEL: one per topic, each a member of that topic's group."""
    from herald.ops.bootstrap import run_delivery

    catalog = process_catalog(ctx)
    if channel not in catalog.channels:
        console.print(f"[red]error:[/red] no channel {channel!r} in the catalog; it declares "
                      f"{', '.join(catalog.channels)}")
        raise typer.Exit(2)
    trace_as(f"herald-deliver-{channel}")
    run_delivery(_settings(ctx), catalog, channel, stop_on_signals(_settings(ctx)), drain,
                 tuple(tier) if tier else None)  # its stop line says what it did


@app.command()
def corrections(ctx: typer.Context) -> None:
    """Apply session corrections to the database: sessions delivery workers found on another
    gateway instance, and the session reconciler's mismatches (disconnect, reconnect, move)."""
    from herald.ops.bootstrap import run_corrections

    # Its stop line says what it did.
    run_corrections(_settings(ctx), process_catalog(ctx), stop_on_signals(_settings(ctx)))


from herald.ops.cli_catalog import catalog_app  # noqa: E402
from herald.ops.cli_channels import channels  # noqa: E402
from herald.ops.cli_dlq import dlq  # noqa: E402  (after `app`: its commands import from here)
from herald.ops.cli_k8s import k8s  # noqa: E402
from herald.ops.cli_notifications import notifications  # noqa: E402
from herald.ops.cli_repairs import resend_missing, sessions, tokens  # noqa: E402

app.add_typer(catalog_app, name="catalog")
app.add_typer(channels, name="channel")
app.add_typer(dlq, name="dlq")
app.add_typer(k8s, name="k8s")
app.add_typer(notifications, name="notifications")
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
    from herald.ops.bootstrap import outbox_status as read_status

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
    from herald.ops.bootstrap import read_health

    report = read_health(_settings(ctx), process_catalog(ctx))
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


def add_plugin_commands(app: typer.Typer) -> None:
    """Commands of the parts installed beside this one (the proving tools: demo, bench, chaos,
    simulator), by the `herald.commands` entry point; the production image ships none."""
    for entry in entry_points(group="herald.commands"):
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("herald."):
                raise  # a dependency is missing, not the part
            continue
        register(app)


add_plugin_commands(app)


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
