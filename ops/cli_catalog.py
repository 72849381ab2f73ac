"""`herald catalog check|show|preview`: the declared catalog, checked, shown as tables, and what
a notification's channels would send for an event."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from herald.consumers.channel_kinds import ChannelContext
from herald.consumers.channel_kinds import preview as channel_preview
from herald.consumers.session_directory import SessionDirectory
from herald.infra.catalogs import catalog_path
from herald.infra.settings import Settings
from herald.producers.ingest_events import InvalidEvent, event_kinds, parse_event
from herald.schemas.catalog_file import CatalogError, load_catalog
from herald.schemas.catalog_model import Catalog, RetrySpec
from herald.schemas.event_schemas import register_event_schemas
from herald.schemas.templates import TemplateFailed, TemplateSet
from herald.streams.rules import notification_requests

catalog_app = typer.Typer(help="The catalog of event kinds, notifications and channels (HERALD_CATALOG).",
                          no_args_is_help=True)
out = Console()
err = Console(stderr=True)
FileArgument = Annotated[Path | None, typer.Argument(
    metavar="[FILE]", help="A catalog file; default HERALD_CATALOG, or the default example's.")]


def _loaded(ctx: typer.Context, file: Path | None) -> Catalog:
    settings: Settings = ctx.obj
    path = file if file is not None else catalog_path(settings.catalog)
    try:
        return load_catalog(path, os.environ)
    except CatalogError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        err.print(f"[red]{len(exc.problems)} problem(s)[/red]: the catalog does not check")
        raise typer.Exit(1) from None


@catalog_app.command("check")
def check(ctx: typer.Context, file: FileArgument = None) -> None:
    """Check a catalog and every reference in it; exit 1 naming each problem's entry and field."""
    catalog = _loaded(ctx, file)
    out.print(f"{catalog.source}: ok ({len(catalog.events)} event kind(s), {len(catalog.notifications)} "
              f"notification(s), {len(catalog.channels)} channel(s))", highlight=False)


@catalog_app.command("preview")
def preview(
    ctx: typer.Context,
    notification: Annotated[str, typer.Argument(help="A notification of the catalog.")],
    event: Annotated[Path, typer.Option(
        "--event", help="A JSON file of one event, as POST /v1/events takes it: {\"type\", \"data\"}.")],
    file: Annotated[Path | None, typer.Option("--catalog", help="A catalog file; default HERALD_CATALOG, "
                                                                "or the default example's.")] = None,
) -> None:
    """Print what each channel of NOTIFICATION would send for the event: the email (MIME), the
    webhook (request line, signed headers, body), the provider's JSON. Exit 1 naming what is
    wrong: an unknown notification, an invalid event, a template that fails to render."""
    catalog = _loaded(ctx, file)
    register_event_schemas(catalog)  # the event is validated against its kind's schema
    if notification not in catalog.notifications:
        _fail(f"no notification {notification!r}; the catalog declares: {', '.join(catalog.notifications)}")
    try:
        domain_event = parse_event(event.read_bytes(), event_kinds(catalog), "preview", None)
    except OSError as exc:
        _fail(f"{event}: cannot be read: {exc.strerror}")
    except InvalidEvent as exc:
        _fail(f"{event}: {exc}")
    kind = catalog.event_kind_of(domain_event.event_type)
    requests = [r for r in notification_requests(catalog, kind, domain_event.event_type, domain_event.record)
                if r["notification_type"] == notification]
    if not requests:
        _fail(f"a {domain_event.event_type} event does not call for {notification} (its trigger or guards)")
    settings: Settings = ctx.obj
    for request in requests:
        channel = ChannelContext(request["channel"], catalog.channels[request["channel"]],
                                 settings.delivery_timeout_s, TemplateSet(catalog.template_dir),
                                 SessionDirectory())
        try:
            shown = channel_preview(channel, request)
        except TemplateFailed as exc:
            _fail(f"channel {request['channel']}: {exc}")
        out.rule(f"{request['channel']} ({channel.spec.kind}) to {request['recipient']}")
        out.print(shown, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@catalog_app.command("show")
def show(ctx: typer.Context, file: FileArgument = None) -> None:
    """Print a catalog as tables: event types -> notifications -> channels; channels and retries."""
    catalog = _loaded(ctx, file)
    out.print(routes_table(catalog))
    out.print(channels_table(catalog))


def routes_table(catalog: Catalog) -> Table:
    table = Table(title=f"{catalog.name}: what each event type sends")
    for column in ("event type", "topic", "notification", "channel -> recipient", "template (params)",
                   "SLA", "resends"):
        table.add_column(column)
    for kind, spec in catalog.events.items():
        for event_type in spec.types:
            routed = catalog.notifications_on(event_type) or [("-", None)]
            for name, notification in routed:
                if notification is None:
                    table.add_row(event_type, catalog.topic_of(kind), "-", "", "", "", "")
                    continue
                guard = "".join(f" [{f}={v}]" for f, v in notification.when.items())
                routes = ", ".join(f"{c} -> {r.to}" for c, r in notification.channels.items())
                params = ", ".join(f"{p}={f}" for p, f in notification.params.items())
                table.add_row(event_type, catalog.topic_of(kind), name + guard, routes,
                              f"{notification.template or name} ({params})", _seconds(notification.sla),
                              str(notification.resends))
    return table


def channels_table(catalog: Catalog) -> Table:
    table = Table(title=f"{catalog.name}: channels")
    columns = ("channel", "kind", "partitions", "concurrency", "retry tiers", "backoff", "gives up after")
    for column in columns:
        table.add_column(column)
    for name, spec in catalog.channels.items():
        table.add_row(name, spec.kind, str(spec.partitions), str(spec.concurrency),
                      ", ".join(_seconds(t) for t in spec.retry.tiers), _backoff(spec.retry),
                      f"{spec.retry.max_attempts} attempts or {_seconds(spec.retry.max_age)}")
    return table


def _backoff(retry: RetrySpec) -> str:
    return f"{retry.jitter} jitter, base {_seconds(retry.base)}, cap {_seconds(retry.cap)}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"
