"""`POST /v1/events`: upstream services in other languages emit events over signed HTTP.

Order of checks: size (413), signature and timestamp (401), JSON and schema (422), then the
Idempotency-Key (409 on a different body) and one transaction that writes the outbox row and
the remembered answer together. The API never talks to Kafka, so Kafka being down never
makes it fail; only an unreachable database answers 503, with Retry-After.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from herald.infra import tracing
from herald.infra.logs import bind
from herald.producers.ingest_events import EventKind, InvalidEvent, parse_event, request_bodies
from herald.producers.outbox import DomainEvent, emit
from herald.producers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureRejected, verify
from herald.schemas.headers import TRACEPARENT, new_traceparent, trace_id_of
from herald.schemas.tables import IngestRequest

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII: the column holds 255


@dataclass(frozen=True)
class IngestConfig:
    kinds: dict[str, EventKind]  # what it accepts: `ingest_events.event_kinds(catalog)`
    secrets: tuple[str, ...]
    tolerance_s: float = 300.0
    max_body_bytes: int = 262144
    idempotency_ttl_s: float = 86400.0


class Rejected(Exception):
    """An answer other than 202, with the error body's code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.headers = status, code, field, headers or {}


def create_ingest_app(engine: sa.Engine, config: IngestConfig) -> FastAPI:
    if not config.secrets:
        raise ValueError("the ingest API needs at least one secret; it never accepts unsigned requests")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_forget_old_keys(engine, config.idempotency_ttl_s))
        yield
        sweeper.cancel()

    app = FastAPI(title="Herald ingest", lifespan=lifespan)

    @app.post("/v1/events", status_code=202, openapi_extra={"requestBody": request_bodies(config.kinds)})
    async def post_event(request: Request) -> JSONResponse:
        # The caller's trace when it sent one, else a new one: its id is in every log line
        # of this event's notifications, and the answer names it.
        given = request.headers.get(TRACEPARENT)
        if not tracing.enabled():
            return await accept(request, given if trace_id_of(given) else new_traceparent())
        # Under FastAPI's own server span when it makes one (0.165 and later), else as that span.
        span = tracing.child_span("ingest", tracing.SpanKind.INTERNAL) or tracing.span_under(
            given, "POST /v1/events", tracing.SpanKind.SERVER,
            {"http.request.method": "POST", "http.route": "/v1/events"})
        answer = await accept(request, tracing.traceparent_of(span))
        tracing.end_span(span, "InternalError" if answer.status_code >= 500 else None,
                         attributes={"http.response.status_code": answer.status_code})
        return answer

    async def accept(request: Request, traceparent: str) -> JSONResponse:
        request_id = _request_id(request.headers.get(REQUEST_ID_HEADER))
        bind(request_id=request_id, trace_id=trace_id_of(traceparent))
        try:
            body = await _read_body(request, config.max_body_bytes)
            _check_signature(request, body, config)
            event = _parse(body, config.kinds, request_id, traceparent)
            key = _idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
            status, answer, replayed = await run_in_threadpool(_commit, engine, event, body, key, request_id)
        except Rejected as exc:
            return _error(exc, request_id)
        except Exception as exc:  # caught here: raised on, it would reset the kept-alive connection
            log.error("ingest: unexpected %s", type(exc).__name__, exc_info=exc)
            return _error(Rejected(500, "internal_error", "an unexpected error; nothing was written"),
                          request_id)
        headers = {REQUEST_ID_HEADER: request_id, TRACEPARENT: traceparent}
        log.info("accepted %s for %s%s", event.event_type, event.key,
                 " (the first answer, replayed)" if replayed else "")
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(answer, status_code=status, headers=headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one; it becomes correlation-id."""
    return given if given and _REQUEST_ID.match(given) else str(uuid.uuid4())


def _idempotency_key(given: str | None) -> str | None:
    if given is not None and not _IDEMPOTENCY_KEY.match(given):
        raise Rejected(422, "invalid_idempotency_key",
                       f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters", IDEMPOTENCY_HEADER)
    return given


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, "body_too_large", f"the body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():  # never buffer more than the limit
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "body_too_large", f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_signature(request: Request, body: bytes, config: IngestConfig) -> None:
    try:
        verify(config.secrets, body, request.headers.get(TIMESTAMP_HEADER),
               request.headers.get(SIGNATURE_HEADER), now=time.time(), tolerance_s=config.tolerance_s)
    except SignatureRejected as exc:
        raise Rejected(401, exc.code, str(exc)) from None


def _parse(body: bytes, kinds: dict[str, EventKind], request_id: str, traceparent: str | None) -> DomainEvent:
    try:
        return parse_event(body, kinds, request_id, traceparent if trace_id_of(traceparent) else None)
    except InvalidEvent as exc:
        raise Rejected(422, exc.code, str(exc), exc.field) from None


def _commit(engine: sa.Engine, event: DomainEvent, body: bytes, key: str | None,
            request_id: str) -> tuple[int, dict[str, Any], bool]:
    """Write the event (and the remembered answer) in one transaction: (status, answer, replayed)."""
    answer = {"event_id": event.record["event_id"], "type": event.event_type, "topic": event.topic,
              "key": event.key, "request_id": request_id}
    digest = hashlib.sha256(body).digest()
    try:
        with Session(engine) as session, session.begin():
            if key is not None:
                earlier = _claim_key(session, key, digest, answer)
                if earlier is not None:
                    return earlier
            emit(session, event)
    except sa.exc.OperationalError as exc:
        log.warning("ingest: database unavailable: %s", exc.orig)
        raise Rejected(503, "database_unavailable", "the database is unavailable; retry later",
                       headers={"Retry-After": "5"}) from None
    except sa.exc.DataError as exc:  # a limit the door checks missed: the caller's input, still
        log.warning("ingest: the database refused a value: %s", type(exc.orig).__name__)
        raise Rejected(422, "schema_violation", "a value does not fit the database; nothing was written",
                       "data") from None
    return 202, answer, False


def _claim_key(session: Session, key: str, digest: bytes,
               answer: dict[str, Any]) -> tuple[int, dict[str, Any], bool] | None:
    """Remember `key`, or return the first answer given under it (None: this request is the first)."""
    # A concurrent request with the same key waits here until the first one commits.
    inserted = session.execute(insert(IngestRequest).values(
        idempotency_key=key, body_sha256=digest, status_code=202, response=answer)
        .on_conflict_do_nothing().returning(IngestRequest.idempotency_key)).first()
    if inserted is not None:
        return None
    first = session.get(IngestRequest, key)
    assert first is not None
    if first.body_sha256 != digest:
        raise Rejected(409, "idempotency_conflict",
                       f"this {IDEMPOTENCY_HEADER} was used with a different body", IDEMPOTENCY_HEADER)
    return first.status_code, first.response, True


def _error(exc: Rejected, request_id: str) -> JSONResponse:
    error: dict[str, Any] = {"code": exc.code, "message": str(exc)}
    if exc.field:
        error["field"] = exc.field
    return JSONResponse({"error": error, "request_id": request_id}, status_code=exc.status,
                        headers={REQUEST_ID_HEADER: request_id, **exc.headers})


async def _forget_old_keys(engine: sa.Engine, ttl_s: float, every_s: float = 60.0) -> None:
    """Idempotency keys are remembered for `ttl_s`; older ones are deleted so the table stays small."""
    statement = sa.delete(IngestRequest).where(
        IngestRequest.created_at < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, ttl_s))
    while True:
        try:
            await run_in_threadpool(_execute, engine, statement)
        except sa.exc.OperationalError as exc:
            log.warning("ingest: could not forget old idempotency keys: %s", exc.orig)
        await asyncio.sleep(every_s)


def _execute(engine: sa.Engine, statement: sa.Executable) -> None:
    with engine.begin() as conn:
        conn.execute(statement)
