"""`herald catalog check|show`: the declared catalog, checked and shown as tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from herald.infra.catalogs import catalog_path
from herald.infra.settings import Settings
from herald.schemas.catalog_file import CatalogError, load_catalog
from herald.schemas.catalog_model import Catalog, RetrySpec

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
