"""Provider simulators: a WhatsApp gateway instance (one of several) or the email provider.

Each records every accepted message in a `MessageStore` (shared by a network's instances)
and honours Idempotency-Key there: a repeated key with the same body returns the first
answer and records nothing new; with another body it is 409.

A gateway instance holds sessions (`/_sim/sessions`), which can be placed, moved and
removed; it sends only from a session it holds connected, else 404. A reconnect request
puts a session back to qr_pending. Given a `ReportTarget`, it reports its sessions to
`gateway.observations` periodically. With a sessions file,
its sessions survive a restart (or `forget_sessions` drops them, as a gateway that lost its
state would). Faults per instance through `POST /_sim/faults`: an error rate with a status,
the next N requests failing, latency, and a rate of requests that hang past the client's
timeout before being accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from herald.proving.simulators.reports import ReportTarget, report_sessions
from herald.proving.simulators.store import MessageStore
from herald.schemas.headers import trace_id_of

log = logging.getLogger(__name__)
KINDS = ("whatsapp", "email")
_MESSAGE_FIELDS = ("to", "template", "subject_id", "notification_id")


class Faults(BaseModel):
    fail_next: int = Field(0, ge=0, description="Answer the next N requests with `status`.")
    status: int = Field(503, ge=400, le=599)
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Chance any request fails.")
    latency_ms: float = Field(0.0, ge=0.0)
    hang_rate: float = Field(0.0, ge=0.0, le=1.0,
                             description="Chance a request hangs `hang_s`, then is accepted.")
    hang_s: float = Field(30.0, ge=0.0)


class SessionState(BaseModel):
    status: str = Field("connected", pattern="^(connected|qr_pending|disconnected)$")


@dataclass
class Instance:
    kind: str
    name: str
    store: MessageStore
    sessions_file: Path | None = None
    faults: Faults = field(default_factory=Faults)
    sessions: dict[str, str] = field(default_factory=dict)  # session id -> status

    def should_fail(self) -> bool:
        if self.faults.fail_next > 0:
            self.faults.fail_next -= 1
            return True
        return self.faults.error_rate > 0 and random.random() < self.faults.error_rate

    def save_sessions(self) -> None:
        if self.sessions_file is not None:
            self.sessions_file.parent.mkdir(parents=True, exist_ok=True)
            self.sessions_file.write_text(json.dumps(self.sessions))


def create_simulator(kind: str, store_path: Path, *, name: str = "", sessions_file: Path | None = None,
                     forget_sessions: bool = False, report: ReportTarget | None = None) -> MessageFastPath:
    if kind not in KINDS:
        raise ValueError(f"unknown simulator kind {kind!r}; known: {', '.join(KINDS)}")
    if report is not None and kind != "whatsapp":
        raise ValueError("only a whatsapp gateway instance reports sessions")
    instance = Instance(kind, name or kind, MessageStore(store_path), sessions_file)
    if sessions_file is not None and sessions_file.exists() and not forget_sessions:
        instance.sessions = json.loads(sessions_file.read_text())
    instance.save_sessions()  # a forgotten session stays forgotten across the next restart

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        reporter = None
        if report is not None:
            reporter = asyncio.create_task(report_sessions(report, instance.name, lambda: instance.sessions))
        yield
        if reporter is not None:
            reporter.cancel()

    app = FastAPI(title=f"Herald {kind} provider simulator ({instance.name})", lifespan=lifespan)
    app.state.instance = instance
    _add_control_routes(app, instance)
    if kind == "whatsapp":
        _add_gateway_routes(app, instance)
    else:
        @app.post("/v1/emails")
        async def send_email(request: Request, idempotency_key: str | None = Header(None)) -> JSONResponse:
            """Send one email (served by `MessageFastPath`; declared here for the API docs)."""
            return _json(*await _send(instance, await request.body(), idempotency_key, session_id=None))
    return MessageFastPath(app, instance)


class MessageFastPath:
    """The message endpoints as plain ASGI, in front of FastAPI, which serves everything else.

    The simulators share the machine with what they measure, so their cost per message is
    kept low: FastAPI's routing, parameter parsing and response classes cost more than the
    message itself (measured in `herald bench deliver`'s CPU by part).
    """

    def __init__(self, app: FastAPI, instance: Instance) -> None:
        self.app = app
        self.instance = instance

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        session_id = self._message_route(scope)
        if session_id is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"idempotency-key"), None)
        status, answer = await _send(self.instance, body, key, session_id=session_id or None)
        if log.isEnabledFor(logging.DEBUG):  # the trace the caller sent, so its id finds this line
            traceparent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"),
                               None)
            log.debug("message %s answered %d", key, status, extra={"trace_id": trace_id_of(traceparent)})
        payload = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    def _message_route(self, scope: dict[str, Any]) -> str | None:
        """The session id of a message POST ("" for email), None for any other request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if self.instance.kind == "email":
            return "" if path == "/v1/emails" else None
        parts = path.split("/")  # "", "sessions", <id>, "messages"
        if len(parts) == 4 and parts[1] == "sessions" and parts[3] == "messages" and parts[2]:
            return parts[2]
        return None


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _json(status: int, answer: dict[str, Any]) -> JSONResponse:
    return JSONResponse(answer, status_code=status)


def _add_gateway_routes(app: FastAPI, instance: Instance) -> None:
    @app.post("/sessions/{session_id}/messages")
    async def send_message(session_id: str, request: Request,
                           idempotency_key: str | None = Header(None)) -> JSONResponse:
        """Send one message from a session (served by `MessageFastPath`; declared for the API docs)."""
        return _json(*await _send(instance, await request.body(), idempotency_key, session_id=session_id))

    @app.get("/sessions/{session_id}")
    async def session_status(session_id: str) -> JSONResponse:
        status = instance.sessions.get(session_id)
        if status is None:
            return JSONResponse({"error": f"session {session_id} is not on {instance.name}"}, 404)
        return JSONResponse({"session_id": session_id, "status": status, "instance": instance.name})

    @app.post("/sessions/{session_id}/reconnect")
    async def reconnect(session_id: str) -> dict[str, str]:
        """Start the session again here: it waits for its QR code to be scanned (seed 004)."""
        instance.sessions[session_id] = "qr_pending"
        instance.save_sessions()
        return {"session_id": session_id, "status": "qr_pending", "instance": instance.name}

    @app.get("/sessions")
    async def list_sessions() -> list[dict[str, str]]:
        return [{"session_id": s, "status": status} for s, status in sorted(instance.sessions.items())]


def _add_control_routes(app: FastAPI, instance: Instance) -> None:
    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return {"kind": instance.kind, "instance": instance.name, **instance.store.stats()}

    @app.get("/_sim/accepted")
    async def accepted() -> dict[str, int]:
        """The count alone: cheap enough to poll while thousands of messages arrive."""
        return {"accepted": instance.store.accepted()}

    @app.get("/_sim/messages")
    async def messages() -> list[dict[str, Any]]:
        return instance.store.messages()

    @app.post("/_sim/faults")
    async def set_faults(faults: Faults) -> dict[str, Any]:
        instance.faults = faults
        return faults.model_dump()

    @app.put("/_sim/sessions/{session_id}")
    async def place_session(session_id: str, state: SessionState) -> dict[str, str]:
        instance.sessions[session_id] = state.status
        instance.save_sessions()
        return {"session_id": session_id, "status": state.status}

    @app.delete("/_sim/sessions/{session_id}")
    async def remove_session(session_id: str) -> dict[str, str]:
        instance.sessions.pop(session_id, None)
        instance.save_sessions()
        return {"session_id": session_id, "status": "removed"}


async def _send(instance: Instance, raw: bytes, key: str | None,
                session_id: str | None) -> tuple[int, dict[str, Any]]:
    faults = instance.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.hang_rate and random.random() < faults.hang_rate:
        await asyncio.sleep(faults.hang_s)  # the client gave up; the message still goes out
    elif instance.should_fail():
        instance.store.count("rejected")
        return faults.status, {"error": "injected failure"}
    if session_id is not None and instance.sessions.get(session_id) != "connected":
        instance.store.count("rejected")
        return 404, {"error": f"session {session_id} is not connected on {instance.name}"}
    return _accept(instance, key, raw, session_id)


def _accept(instance: Instance, key: str | None, raw: bytes,
            session_id: str | None) -> tuple[int, dict[str, Any]]:
    if not key:
        instance.store.count("rejected")
        return 400, {"error": "Idempotency-Key header is required"}
    try:
        body = json.loads(raw)
        message = {f: body[f] for f in _MESSAGE_FIELDS}
    except (ValueError, KeyError, TypeError) as exc:
        instance.store.count("rejected")
        return 422, {"error": f"malformed message: {exc!r}"}
    fingerprint = hashlib.sha256(raw).hexdigest()
    accepted = instance.store.accept(key, fingerprint, {**message, "session_id": session_id},
                                     instance.name)
    return accepted.status_code, accepted.answer
