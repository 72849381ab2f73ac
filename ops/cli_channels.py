"""`herald channel ...`: pause and resume a channel, or one endpoint or gateway instance of it.

Every change is a record on channels.control: the delivery processes follow it, and
`herald channel history` reads it back as the audit log.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from herald.infra.settings import Settings
from herald.ops.cli_dlq import ActorOption, _actor

channels = typer.Typer(help="Pause and resume channels (or one endpoint of one); every change audited.",
                       no_args_is_help=True)
err = Console(stderr=True)
EndpointOption = Annotated[str | None, typer.Option(
    help="Only this endpoint of the channel: a gateway instance's or webhook's host[:port] or URL.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _change(ctx: typer.Context, channel: str, endpoint: str | None, state: str, reason: str,
            actor: str | None, rate: float | None) -> None:
    from herald.infra.kafka_views import KafkaUnavailable
    from herald.ops.bootstrap import reachable_endpoints, use_schema_registry
    from herald.ops.channel_control import ChangeRequest, ChannelControlError, publish_change
    from herald.ops.cli import process_catalog

    catalog = process_catalog(ctx)
    settings: Settings = ctx.obj
    try:
        change = ChangeRequest(channel, endpoint, state, reason, _actor(actor), rate).checked(catalog)
    except ChannelControlError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    bootstrap = reachable_endpoints(settings, need_database=False).kafka_bootstrap
    use_schema_registry(settings, catalog)
    try:
        publish_change(bootstrap, settings.namespace, change)
    except KafkaUnavailable as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    rate_note = f" at most {rate:g}/s per delivery process" if rate else ""
    err.print(f"{change.target} {state}{rate_note} (by {change.actor}, change {change.action_id})")


@channels.command("pause")
def pause(ctx: typer.Context,
          channel: Annotated[str, typer.Argument(help="A channel of the catalog.")],
          reason: Annotated[str, typer.Option(help="Why: the audit log and the console show it.")],
          endpoint: EndpointOption = None, actor: ActorOption = None) -> None:
    """Stop sending on a channel (or to one endpoint): workers keep their positions, nothing is
    dead-lettered, retry tiers wait."""
    _change(ctx, channel, endpoint, "paused", reason, actor, None)


@channels.command("resume")
def resume(ctx: typer.Context,
           channel: Annotated[str, typer.Argument(help="A channel of the catalog.")],
           rate: Annotated[float | None, typer.Option(
               help="At most this many sends per second per delivery process; run resume again "
                    "to raise it, or without --rate to lift it.")] = None,
           reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
           endpoint: EndpointOption = None, actor: ActorOption = None) -> None:
    """Send again, at once or at a chosen rate."""
    _change(ctx, channel, endpoint, "running", reason, actor, rate)


def _read(ctx: typer.Context) -> tuple[Any, list[Any]]:
    from herald.ops.bootstrap import reachable_endpoints, use_schema_registry
    from herald.ops.channel_control import control_history
    from herald.ops.cli import process_catalog

    catalog = process_catalog(ctx)
    settings: Settings = ctx.obj
    bootstrap = reachable_endpoints(settings, need_database=False).kafka_bootstrap
    use_schema_registry(settings, catalog)
    return catalog, control_history(bootstrap, settings.namespace)


@channels.command("list")
def list_channels(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Each channel of the catalog: running or paused, since when, by whom and why."""
    from herald.ops.channel_control import channel_states

    catalog, history = _read(ctx)
    rows = channel_states(catalog, history)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("channel", "state", "rate", "since", "by", "reason", "paused endpoints")
    for row in rows:
        last = row["last_change"] or {}
        table.add_row(row["channel"], row["state"], f"{row['rate_per_s']:g}/s" if row["rate_per_s"] else "-",
                      last.get("at", "-"), last.get("actor", "-"), last.get("reason", "-"),
                      ", ".join(e["endpoint"] for e in row["paused_endpoints"]) or "-")
    Console().print(table)


@channels.command("history")
def history(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1)] = 50,
            as_json: AsJson = False) -> None:
    """Every pause and resume, newest first: the audit log."""
    from herald.ops.channel_control import audit_rows

    _catalog, changes = _read(ctx)
    rows = audit_rows(changes, limit)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("at", "target", "state", "rate", "by", "reason")
    for row in rows:
        table.add_row(row["at"], row["target"], row["state"],
                      f"{row['rate_per_s']:g}/s" if row["rate_per_s"] else "-", row["actor"], row["reason"])
    Console().print(table)
