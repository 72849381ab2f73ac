"""`herald notifications ...`: a notification's whole story in a terminal, and its indexer.

`show` needs only the database, so it answers while Kafka is down.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

notifications = typer.Typer(help="Each notification's story: requests, attempts, outcomes, replays.",
                            no_args_is_help=True)
err = Console(stderr=True)


@notifications.command("index")
def index(ctx: typer.Context,
          drain: Annotated[bool, typer.Option(help="Exit once caught up.")] = False,
          rebuild: Annotated[bool, typer.Option(
              help="Read the topics from their start (a group of its own) into the table, then exit: "
                   "a lost table gets back what the topics hold.")] = False) -> None:
    """Index every request and outcome into the notification_history table until stopped."""
    from herald.ops.cli import process_catalog, stop_on_signals
    from herald.ops.notification_history import run_history_index

    stats = run_history_index(ctx.obj, process_catalog(ctx), stop_on_signals(ctx.obj), drain, rebuild)
    if drain or rebuild:
        err.print(f"indexed {stats.indexed}, already there {stats.already_indexed}, skipped {stats.skipped}")


def _query(key: str | None, recipient: str | None, notification_type: str | None, status: str | None,
           since: datetime | None, field: str | None) -> Any:
    from herald.ops.notification_history import StoryQuery

    name, sep, value = (field or "").partition("=")
    if field and (not sep or not name):
        err.print("[red]error:[/red] --field expects NAME=VALUE, e.g. user_id=42")
        raise typer.Exit(2)
    query = StoryQuery(key, recipient, notification_type, status,
                       since.replace(tzinfo=UTC) if since and since.tzinfo is None else since,
                       (name, value) if field else None)
    if problems := query.problems():
        err.print(f"[red]error:[/red] {'; '.join(problems)}")
        raise typer.Exit(2)
    return query


@notifications.command("show")
def show(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Argument(help="An event's key (e.g. an order id) or a "
                                                   "notification id.")] = None,
    recipient: Annotated[str | None, typer.Option(help="Every notification to this address.")] = None,
    notification_type: Annotated[str | None, typer.Option("--type", help="Only this notification.")] = None,
    status: Annotated[str | None, typer.Option(help="Only those whose latest outcome is this (sent, "
                                                    "retry_scheduled, dead_lettered, requested).")] = None,
    since: Annotated[datetime | None, typer.Option(help="With a moment at or after (ISO 8601).")] = None,
    field: Annotated[str | None, typer.Option(metavar="NAME=VALUE", help="A field of the triggering "
                                              "event, as the catalog maps it, has this value.")] = None,
    masked: Annotated[bool, typer.Option(help="Mask phone numbers and emails.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The stories as JSON.")] = False,
) -> None:
    """Every notification of KEY (or of --recipient), each with its timeline."""
    from herald.ops.bootstrap import database_engine
    from herald.ops.notification_history import notification_stories

    query = _query(key, recipient, notification_type, status, since, field)
    engine = database_engine(ctx.obj)
    try:
        stories = notification_stories(engine, query, mask=masked)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(stories, indent=2))
        return
    if not stories:
        err.print("no notification matches (the history keeps HERALD_HISTORY_RETENTION_DAYS)")
        raise typer.Exit(1)
    for story in stories:
        _print_story(story)


def _print_story(story: dict[str, Any]) -> None:
    title = (f"{story['notification_type']} on {story['channel']} to {story['recipient'] or '?'}: "
             f"{story['status']} ({story['notification_id']}, event {story['subject_id']})")
    table = Table("at", "what", "attempt", "detail", title=title, title_justify="left")
    for moment in story["timeline"]:
        detail = [f"{moment['error_class']}: {moment.get('error', '')}" if "error_class" in moment else "",
                  f"due {moment['due_at']}" if "due_at" in moment else "",
                  f"message id {moment['provider_message_id']}" if "provider_message_id" in moment else "",
                  f"via {moment['gateway_instance']}" if "gateway_instance" in moment else ""]
        table.add_row(moment["at"], moment["kind"], str(moment.get("attempts", "")),
                      "; ".join(d for d in detail if d))
    Console().print(table)
