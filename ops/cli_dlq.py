"""`herald dlq ...`: the failed-jobs screen in a terminal. List, show, replay, discard, audit.

A thin shell over `herald.ops.dead_letter_ops`; every command but `index` needs only
the database, so it works while Kafka is down.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from herald.infra.masking import mask_text, mask_value
from herald.infra.progress import ProgressReporter
from herald.infra.settings import Settings
from herald.schemas.catalog import channel_of_topic

dlq = typer.Typer(help="Dead letters: list, show, replay and discard them, with an audit log.",
                  no_args_is_help=True)
err = Console(stderr=True)

TopicOption = Annotated[str | None, typer.Option(
    help="Original topic, or a channel of the catalog (e.g. email).")]
ErrorOption = Annotated[str | None, typer.Option("--error-class", help="Exact error class.")]
KeyOption = Annotated[str | None, typer.Option(help="Exact record key (e.g. a notification id).")]
TextOption = Annotated[str | None, typer.Option(
    "--search", help="Text in the key, error, headers or decoded payload.")]
SinceOption = Annotated[datetime | None, typer.Option(help="Failed at or after (ISO 8601, UTC if no zone).")]
FieldOption = Annotated[list[str] | None, typer.Option(
    "--field", metavar="PATH=VALUE",
    help="A field of the decoded payload has this value, e.g. params.user_id=42 (repeatable).")]
ActorOption = Annotated[str | None, typer.Option(help="Who does this, for the audit log; default user@host.")]
DryRunOption = Annotated[bool, typer.Option(help="Say what would happen; change nothing.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every open dead letter the filters match.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj  # type: ignore[no-any-return]


def _since(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _actor(given: str | None) -> str:
    return given or f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _fields(given: list[str] | None) -> tuple[tuple[str, str], ...]:
    """--field PATH=VALUE options as (path, value) pairs."""
    pairs = []
    for item in given or ():
        path, equals, value = item.partition("=")
        if not equals:
            err.print("[red]error:[/red] --field takes PATH=VALUE, e.g. params.user_id=42")
            raise typer.Exit(2)
        pairs.append((path.strip(), value))
    return tuple(pairs)


def _filter(ids: list[int] | None, every: bool, topic: str | None, error_class: str | None, key: str | None,
            search: str | None, since: datetime | None, fields: list[str] | None = None,
            state: str | None = "open") -> Any:
    from herald.ops.dead_letter_ops import DeadLetterFilter

    criteria = (topic, error_class, key, search, since, *(fields or ()))
    if not ids and not every:
        err.print("[red]error:[/red] name dead letters by ID, or pass --all (with filters to narrow it)")
        raise typer.Exit(2)
    if ids and (every or any(c is not None for c in criteria)):
        err.print("[red]error:[/red] give IDs or --all with filters, not both")
        raise typer.Exit(2)
    return DeadLetterFilter(ids=tuple(ids or ()), topic=topic, error_class=error_class, key=key, text=search,
                            since=_since(since), state=state, fields=_fields(fields))


@dlq.command("index")
def index(ctx: typer.Context,
          drain: Annotated[bool, typer.Option(help="Exit once every dead-letter topic is indexed.")] = False,
          ) -> None:
    """Index every dead-letter topic into the database (a long-running consumer group)."""
    from herald.ops.bootstrap import run_dlq_index
    from herald.ops.cli import process_catalog, stop_on_signals

    # Its stop line says what it did.
    run_dlq_index(_settings(ctx), process_catalog(ctx), stop_on_signals(_settings(ctx)), drain)


@dlq.command("list")
def list_(ctx: typer.Context, topic: TopicOption = None, error_class: ErrorOption = None,
          key: KeyOption = None, search: TextOption = None, since: SinceOption = None,
          field: FieldOption = None,
          state: Annotated[str, typer.Option(help="open, replayed, discarded or any.")] = "open",
          limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows per page.")] = 50,
          page: Annotated[int, typer.Option(min=1, help="Page number, newest first.")] = 1,
          as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False) -> None:
    """Dead letters, newest first, phone numbers and emails masked."""
    from herald.ops.bootstrap import database_engine
    from herald.ops.dead_letter_ops import DeadLetterFilter, list_dead_letters
    from herald.ops.dead_letter_views import summary

    selection = _checked(lambda: DeadLetterFilter(
        topic=topic, error_class=error_class, key=key, text=search, since=_since(since),
        state=None if state == "any" else state, fields=_fields(field)))
    engine = database_engine(_settings(ctx))
    with Session(engine) as session:
        found = list_dead_letters(session, selection, limit=limit, offset=(page - 1) * limit)
        rows = [summary(row) for row in found.rows]
    engine.dispose()
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    pages = max(1, -(-found.total // limit))
    Console().print(dead_letter_table(rows, f"dead letters: {found.total} match, page {page} of {pages}"))


def dead_letter_table(rows: list[dict[str, Any]], title: str) -> Table:
    """The list as a table that stays readable at 80 columns: a channel's topic by what --topic
    takes, a UUID key by its first 8 characters (`dlq show` and --json have them whole), and the
    error, its attempts and replays as words that wrap instead of being cut."""
    mixed = len({row["state"] for row in rows}) > 1  # the default lists open ones only
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("failed UTC", no_wrap=True)
    table.add_column("topic", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=1, min_width=24)
    for row in rows:
        # Text, not markup: a key or an error message may hold brackets.
        table.add_row(str(row["id"]), _short_time(row["last_failed_at"]), _short_topic(row["original_topic"]),
                      Text(_short_key(row["key"])), Text(_error_words(row, show_state=mixed)))
    return table


def _error_words(row: dict[str, Any], show_state: bool) -> str:
    tries = f" after {row['attempts']} tr{'y' if row['attempts'] == 1 else 'ies'}" if row["attempts"] else ""
    replays = f", replayed {row['replay_count']}x" if row["replay_count"] else ""
    state = f" [{row['state']}]" if show_state else ""
    return f"{row['error_class']}{tries}{replays}{state}: {row['error_message'][:200]}"


def _short_time(iso: str) -> str:
    """2026-11-23T10:11:12.345+00:00 as 11-23 10:11 (UTC, as stored)."""
    return f"{iso[5:10]} {iso[11:16]}"


def _short_topic(topic: str) -> str:
    """notifications.whatsapp.retry.3 as whatsapp.retry.3: a channel's topics by what --topic
    takes; other topics whole."""
    return topic.removeprefix("notifications.") if channel_of_topic(topic) else topic


def _short_key(key: str | None) -> str:
    if key is None:
        return "-"
    return f"{key[:8]}…" if _UUID_SHAPE.match(key) else key


_UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dlq.command("show")
def show(ctx: typer.Context, dead_letter_id: Annotated[int, typer.Argument(metavar="ID")],
         masked: Annotated[bool, typer.Option(help="Mask phone numbers and emails here too.")] = False,
         ) -> None:
    """One dead letter whole: headers, decoded payload, error, what became of it (JSON)."""
    from herald.ops.bootstrap import database_engine
    from herald.ops.dead_letter_views import detail
    from herald.schemas.tables import DeadLetter

    engine = database_engine(_settings(ctx))
    with Session(engine) as session:
        row = session.get(DeadLetter, dead_letter_id)
        shown = None if row is None else detail(row)
    engine.dispose()
    if shown is None:
        err.print(f"[red]error:[/red] no dead letter {dead_letter_id}")
        raise typer.Exit(1)
    print(json.dumps(mask_value(shown) if masked else shown, indent=2))


@dlq.command("replay")
def replay(ctx: typer.Context, ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
           every: AllOption = False, topic: TopicOption = None, error_class: ErrorOption = None,
           key: KeyOption = None, search: TextOption = None, since: SinceOption = None,
           field: FieldOption = None,
           to: Annotated[str, typer.Option(help="original: the topic it failed on; retry: its first "
                                                "retry tier (notification topics).")] = "original",
           limit: Annotated[int | None, typer.Option(min=1, help="At most this many, oldest first.")] = None,
           dry_run: DryRunOption = False, actor: ActorOption = None,
           batch_size: Annotated[int, typer.Option(min=1, max=5000, help="Rows per transaction.")] = 200,
           ) -> None:
    """Put dead letters back (key, value, headers; replay count + 1) through the outbox."""
    from herald.ops import dead_letter_ops as ops

    selection = _checked(lambda: _filter(ids, every, topic, error_class, key, search, since, field))
    _run_action(ctx, lambda engine, hook: ops.replay(
        engine, selection, actor=_actor(actor), target=to, dry_run=dry_run, batch_size=batch_size,
        limit=limit, after_batch=hook), dry_run)


@dlq.command("discard")
def discard(ctx: typer.Context, ids: Annotated[list[int] | None, typer.Argument(metavar="[ID]...")] = None,
            every: AllOption = False, topic: TopicOption = None, error_class: ErrorOption = None,
            key: KeyOption = None, search: TextOption = None, since: SinceOption = None,
            field: FieldOption = None, dry_run: DryRunOption = False, actor: ActorOption = None) -> None:
    """Mark dead letters discarded: nothing is produced; the audit log keeps who and which."""
    from herald.ops import dead_letter_ops as ops

    selection = _checked(lambda: _filter(ids, every, topic, error_class, key, search, since, field))
    _run_action(ctx, lambda engine, _hook: ops.discard(
        engine, selection, actor=_actor(actor), dry_run=dry_run), dry_run)


@dlq.command("audit")
def audit(ctx: typer.Context,
          limit: Annotated[int, typer.Option(min=1, help="Newest entries.")] = 20) -> None:
    """The audit log: every replay and discard, who ran it, what it selected, how many rows."""
    from herald.ops.bootstrap import database_engine
    from herald.ops.dead_letter_views import audit_entries

    engine = database_engine(_settings(ctx))
    with Session(engine) as session:
        entries = audit_entries(session, limit)
    engine.dispose()
    table = Table("id", "action", "actor", "started", "finished", "rows", "selection")
    for entry in entries:
        table.add_row(str(entry["id"]), f"{entry['action']} {entry['target'] or ''}".strip(), entry["actor"],
                      entry["started_at"][:19], (entry["finished_at"] or "interrupted")[:19],
                      str(entry["row_count"]), json.dumps(entry["selection"]))
    Console().print(table)


def _checked(build: Any) -> Any:
    from herald.ops.dead_letter_ops import DeadLetterOpsError

    try:
        return build()
    except DeadLetterOpsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run_action(ctx: typer.Context, act: Any, dry_run: bool) -> None:
    from herald.ops.bootstrap import database_engine
    from herald.ops.dead_letter_ops import DeadLetterOpsError

    engine = database_engine(_settings(ctx))
    try:
        if dry_run:  # a count, at once: nothing to follow
            result = act(engine, lambda _r: None)
        else:
            with ProgressReporter("dlq").phase("dead letters done") as done:
                result = act(engine, lambda r: done(r.done))
    except DeadLetterOpsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    print(json.dumps(result.as_dict()))
    verb = "would be" if dry_run else "were"
    err.print(f"{result.done} of {result.matched} open dead letter(s) {verb} {result.action}ed"
              + (f"; audit entry {result.action_id}" if result.action_id else "")
              + "".join(f"\n  skipped {n}: {mask_text(reason)}" for reason, n in result.skipped.items()))
    if not result.done:  # a script must not read "nothing happened" as success
        err.print(f"[red]nothing {'would be' if dry_run else 'was'} {result.action}ed[/red]"
                  + ("" if result.matched or result.skipped else ": no open dead letter matches"))
        raise typer.Exit(1)
