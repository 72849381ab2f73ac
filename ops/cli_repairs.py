"""`herald resend-missing` and `herald sessions sync`: the seeds' repair commands, each a thin
shell over `herald.ops.repairs`."""

from __future__ import annotations

import getpass
import json
import socket
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from herald.infra.masking import mask_text
from herald.infra.settings import Settings

sessions = typer.Typer(help="WhatsApp gateway sessions as the database declares them.", no_args_is_help=True)
err = Console(stderr=True)
DryRun = Annotated[bool, typer.Option(help="Say what would be done; change nothing.")]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")]


def _print(report: object, title: str, as_json: bool) -> None:
    from herald.ops.repairs import RepairReport

    assert isinstance(report, RepairReport)
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    table = Table("key", "kind", "detail", "action", title=f"{title}{' (dry run)' if report.dry_run else ''}")
    for line in report.lines:
        table.add_row(line.key, line.what, mask_text(line.detail), line.action)
    Console().print(table)
    err.print(f"{len(report.lines)} open")


def _prepared(ctx: typer.Context) -> tuple[Settings, str, object]:
    from herald.ops.bootstrap import database_engine, reachable_endpoints

    settings: Settings = ctx.obj
    endpoints = reachable_endpoints(settings)
    return settings, endpoints.kafka_bootstrap, database_engine(settings)


def resend_missing(
    ctx: typer.Context,
    notification_type: Annotated[list[str] | None, typer.Option(
        "--type", help="Only this notification of the catalog (`herald catalog show`); repeatable.")
    ] = None,
    dry_run: DryRun = False, as_json: AsJson = False,
) -> None:
    """Request every open missing notification again (same notification id) through the outbox."""
    from herald.ops.bootstrap import use_schema_registry
    from herald.ops.cli import process_catalog
    from herald.ops.repairs import resend_missing as run

    catalog = process_catalog(ctx)
    settings, bootstrap, engine = _prepared(ctx)
    use_schema_registry(settings, catalog)
    try:
        report = run(settings, catalog, bootstrap, engine, tuple(notification_type or ()),  # type: ignore[arg-type]
                     dry_run)
    except ValueError as exc:
        err.print(f"[red]error:[/red] --type: {exc}")
        raise typer.Exit(2) from None
    _print(report, "missing notifications", as_json)


@sessions.command("sync")
def sync(
    ctx: typer.Context,
    workspace: Annotated[str | None, typer.Option(help="Only this workspace's sessions.")] = None,
    auto_reconnect: Annotated[bool, typer.Option(
        help="Also ask each lost session's gateway to reconnect it.")] = False,
    dry_run: DryRun = False, as_json: AsJson = False,
) -> None:
    """Apply the session reconciler's open verdicts now: lost sessions marked disconnected
    (and reconnected, with --auto-reconnect), moved sessions given their new instance."""
    from herald.ops.bootstrap import use_schema_registry
    from herald.ops.cli import process_catalog
    from herald.ops.repairs import sync_sessions

    catalog = process_catalog(ctx)
    settings, bootstrap, engine = _prepared(ctx)
    use_schema_registry(settings, catalog)
    actor = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    report = sync_sessions(settings, bootstrap, engine, workspace, auto_reconnect, dry_run,  # type: ignore[arg-type]
                           actor)
    _print(report, "session mismatches", as_json)


tokens = typer.Typer(help="Tokens of the ops API: viewer (read) or operator (replay, discard, "
                          "resend, reconnect).", no_args_is_help=True)


@tokens.command("create")
def create_token(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Who or what holds it.")],
                 role: Annotated[str, typer.Option(help="viewer or operator")] = "viewer") -> None:
    """Create a token and print it: it is shown this once (only its hash is stored)."""
    from sqlalchemy.orm import Session

    from herald.ops.api_tokens import TokenError
    from herald.ops.api_tokens import create_token as create
    from herald.ops.bootstrap import database_engine

    engine = database_engine(ctx.obj)
    try:
        with Session(engine) as session, session.begin():
            token = create(session, name, role)
    except TokenError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    print(token)
    err.print(f"token {name!r} ({role}) created; keep it now, it is not shown again")


@tokens.command("revoke")
def revoke_token(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token: it is refused from the next request on."""
    from sqlalchemy.orm import Session

    from herald.ops.api_tokens import TokenError
    from herald.ops.api_tokens import revoke_token as revoke
    from herald.ops.bootstrap import database_engine

    engine = database_engine(ctx.obj)
    try:
        with Session(engine) as session, session.begin():
            revoke(session, name)
    except TokenError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    err.print(f"token {name!r} revoked")


@tokens.command("list")
def list_tokens(ctx: typer.Context) -> None:
    """Every token: name, role, created, revoked (never the token itself)."""
    from sqlalchemy.orm import Session

    from herald.ops.api_tokens import list_tokens as listed
    from herald.ops.bootstrap import database_engine

    engine = database_engine(ctx.obj)
    with Session(engine) as session:
        table = Table("name", "role", "created", "revoked")
        for row in listed(session):
            table.add_row(row.name, row.role, row.created_at.isoformat(timespec="seconds"),
                          "-" if row.revoked_at is None else row.revoked_at.isoformat(timespec="seconds"))
    engine.dispose()
    Console().print(table)
