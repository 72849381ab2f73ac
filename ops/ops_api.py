"""The ops API (`herald api`): health, dead letters, missing notifications and session
mismatches over HTTP, for the console and for scripts. OpenAPI at /openapi.json.

Every /v1 route needs `Authorization: Bearer <token>`. A viewer reads; an operator also
replays, discards, resends and reconnects. Lists mask phone numbers and email addresses;
one dead letter's detail shows them whole to an operator only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from herald.infra.kafka_views import KafkaUnavailable
from herald.infra.masking import mask_value
from herald.infra.settings import Settings
from herald.ops import dead_letter_ops as ops
from herald.ops.api_tokens import Caller, caller_of
from herald.ops.dead_letter_views import audit_entries, detail, summary
from herald.ops.health import health_report, pipeline_figures
from herald.ops.metrics import PipelineCollector, registry_of
from herald.schemas.catalog_model import Catalog
from herald.schemas.tables import DeadLetter


class ApiError(BaseModel):
    """Every error's body: a stable code, and what is wrong in words."""

    error: str
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiError, "description": "No token, or an unknown or revoked one"},
    403: {"model": ApiError, "description": "The token's role may not do this"},
}
OPERATOR_ERRORS = {**ERRORS, 400: {"model": ApiError,
                                   "description": "The request cannot be carried out as asked"}}
ONE_ROW_ERRORS = {**OPERATOR_ERRORS, 404: {"model": ApiError, "description": "No such dead letter"},
                  409: {"model": ApiError, "description": "Not open: already replayed or discarded"}}


class DeadLetterSelection(BaseModel):
    """Which open dead letters: ids, or filters (at least one of them, or all=true)."""

    ids: list[int] = Field(default_factory=list, max_length=10000)
    all: bool = False
    topic: str | None = None
    error_class: str | None = None
    key: str | None = None
    search: str | None = None
    since: datetime | None = None
    # A field of the decoded payload with this value: {"params.user_id": "42"}.
    fields: dict[str, str] = Field(default_factory=dict, max_length=8)
    dry_run: bool = False

    def to_filter(self) -> ops.DeadLetterFilter:
        criteria = (self.topic, self.error_class, self.key, self.search, self.since, *self.fields)
        if not self.ids and not self.all and all(c is None for c in criteria):
            raise ops.DeadLetterOpsError("name dead letters by ids, by filters, or with all=true")
        return ops.DeadLetterFilter(ids=tuple(self.ids), topic=self.topic, error_class=self.error_class,
                                    key=self.key, text=self.search, since=self.since,
                                    fields=tuple(self.fields.items()))


class ReplayRequest(DeadLetterSelection):
    to: Literal["original", "retry"] = "original"
    limit: int | None = Field(default=None, ge=1, description="At most this many, oldest first.")


class ReplayOne(BaseModel):
    to: Literal["original", "retry"] = "original"


def api_error(status: int, error: str, detail: str,
              headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status, {"error": error, "detail": detail}, headers)


@dataclass(frozen=True)
class Wiring:
    """What the routes need, built once at the entry point and kept in app.state."""

    settings: Settings
    catalog: Catalog
    engine: sa.Engine
    kafka_bootstrap: str | None


def _wiring(request: Request) -> Wiring:
    return request.app.state.wiring  # type: ignore[no-any-return]


def _session(wiring: Annotated[Wiring, Depends(_wiring)]) -> Iterator[Session]:
    with Session(wiring.engine) as db:
        yield db


def _caller(request: Request, db: Annotated[Session, Depends(_session)]) -> Caller:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    found = caller_of(db, token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if found is None:
        raise api_error(401, "unauthorized", "send Authorization: Bearer <token> with a valid, "
                     "unrevoked token (herald tokens create)", {"WWW-Authenticate": "Bearer"})
    return found


def _operator(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    if not who.is_operator:
        raise api_error(403, "forbidden",
                        f"token {who.name!r} is a viewer; this needs an operator token")
    return who


Viewer = Annotated[Caller, Depends(_caller)]
Operator = Annotated[Caller, Depends(_operator)]
Db = Annotated[Session, Depends(_session)]
Wired = Annotated[Wiring, Depends(_wiring)]
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]

probes = APIRouter(tags=["probes"])
dead_letters = APIRouter(prefix="/v1/dlq", tags=["dead letters"], responses=ERRORS)


def create_ops_api(wiring: Wiring) -> FastAPI:
    from herald.ops.api_channels import channel_routes
    from herald.ops.api_notifications import notifications
    from herald.ops.api_streams import streams

    app = FastAPI(title="Herald ops API", version="1", description=__doc__)
    app.state.wiring = wiring
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(ops.DeadLetterOpsError, _bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(KafkaUnavailable, _kafka_down)  # type: ignore[arg-type]
    for router in (probes, dead_letters, streams, notifications, channel_routes):
        app.include_router(router)
    return app


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    body = exc.detail if isinstance(exc.detail, dict) else {"error": "http", "detail": str(exc.detail)}
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def _bad_request(_request: Request, exc: ops.DeadLetterOpsError) -> JSONResponse:
    return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)


async def _kafka_down(_request: Request, exc: KafkaUnavailable) -> JSONResponse:
    return JSONResponse({"error": "kafka_unavailable", "detail": str(exc)}, 503)


@probes.get("/up")
def up() -> dict[str, str]:
    """Liveness: answers without touching any dependency."""
    return {"status": "up"}


@probes.get("/", include_in_schema=False, response_class=HTMLResponse)
def console() -> HTMLResponse:
    """The web console: one page; it asks for a token and calls the routes below."""
    page = resources.files("herald.ops").joinpath("console/index.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


@probes.get("/v1/me", tags=["health"], responses=ERRORS)
def me(who: Viewer) -> dict[str, str]:
    """The caller's token name and role."""
    return {"name": who.name, "role": who.role}


@probes.get("/metrics", response_class=PlainTextResponse)
def metrics(wiring: Wired) -> PlainTextResponse:
    """Prometheus metrics of the whole pipeline, read at scrape time (no token: scrapers are
    kept off by the network, as Prometheus' own exporters are)."""
    registry = registry_of(PipelineCollector(lambda: pipeline_figures(
        health_report(wiring.settings, wiring.catalog, wiring.kafka_bootstrap, wiring.engine))))
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@probes.get("/v1/health", tags=["health"], responses={**ERRORS, 503: {"description": "Unhealthy"}})
def health(_who: Viewer, wiring: Wired) -> JSONResponse:
    """The System Health widget; 503 when a check fails."""
    report = health_report(wiring.settings, wiring.catalog, wiring.kafka_bootstrap, wiring.engine)
    return JSONResponse(report.as_dict(), 200 if report.healthy else 503)


@dead_letters.get("")
def list_dlq(_who: Viewer, db: Db, topic: str | None = None, error_class: str | None = None,
             key: str | None = None, search: str | None = None, since: datetime | None = None,
             state: Literal["open", "replayed", "discarded", "any"] = "open", limit: Limit = 50,
             offset: Offset = 0,
             field: Annotated[list[str] | None, Query(
                 description="PATH=VALUE: a field of the decoded payload, e.g. params.user_id=42")] = None,
             ) -> dict[str, Any]:
    """Dead letters, newest first, phone numbers and emails masked."""
    fields = tuple(tuple(item.split("=", 1)) for item in field or () if "=" in item)
    if len(fields) != len(field or ()):
        raise api_error(422, "invalid_field", "field takes PATH=VALUE, e.g. params.user_id=42")
    selection = ops.DeadLetterFilter(topic=topic, error_class=error_class, key=key, text=search,
                                     since=since, state=None if state == "any" else state,
                                     fields=fields)  # type: ignore[arg-type]
    page = ops.list_dead_letters(db, selection, limit=limit, offset=offset)
    return {"total": page.total, "limit": limit, "offset": offset, "items": [summary(r) for r in page.rows]}


@dead_letters.get("/audit")
def audit(_who: Viewer, db: Db, limit: Limit = 50, offset: Offset = 0) -> list[dict[str, Any]]:
    """Every replay and discard: who, when, what it selected, which rows, how many."""
    return audit_entries(db, limit, offset)


@dead_letters.get("/{dead_letter_id}", responses={404: {"model": ApiError}})
def show_dlq(dead_letter_id: RowId, who: Viewer, db: Db) -> dict[str, Any]:
    """One dead letter whole: headers, decoded payload; masked unless the caller is an operator."""
    row = db.get(DeadLetter, dead_letter_id)
    if row is None:
        raise api_error(404, "not_found", f"no dead letter {dead_letter_id}")
    shown = detail(row)
    return shown if who.is_operator else mask_value(shown)  # type: ignore[no-any-return]


@dead_letters.post("/{dead_letter_id}/replay", responses=ONE_ROW_ERRORS)
def replay_one(dead_letter_id: RowId, body: ReplayOne, who: Operator, wiring: Wired) -> dict[str, Any]:
    """Replay one open dead letter through the outbox (replay count + 1); 409 says why one that
    is not open was not replayed."""
    selection = ops.DeadLetterFilter(ids=(dead_letter_id,))
    result = ops.replay(wiring.engine, selection, actor=who.actor, target=body.to)
    if not result.done:
        reason = next(iter(result.skipped), "not replayable")
        if reason == "no such dead letter":
            raise api_error(404, "not_found", f"no dead letter {dead_letter_id}")
        raise api_error(409, "not_replayed", f"dead letter {dead_letter_id} was not replayed: {reason}")
    return result.as_dict()


@dead_letters.post("/replay", responses=OPERATOR_ERRORS)
def replay_many(body: ReplayRequest, who: Operator, wiring: Wired) -> dict[str, Any]:
    """Replay every open dead letter the ids or filters select; dry_run only counts."""
    return ops.replay(wiring.engine, body.to_filter(), actor=who.actor, target=body.to,
                      dry_run=body.dry_run, limit=body.limit).as_dict()


@dead_letters.post("/discard", responses=OPERATOR_ERRORS)
def discard(body: DeadLetterSelection, who: Operator, wiring: Wired) -> dict[str, Any]:
    """Mark the selected open dead letters discarded; nothing is produced."""
    return ops.discard(wiring.engine, body.to_filter(), actor=who.actor, dry_run=body.dry_run).as_dict()
