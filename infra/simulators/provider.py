"""Provider simulators: a WhatsApp gateway instance (one of several) or the email provider.

Each records every accepted message in a `MessageStore` (shared by a network's instances)
and honours Idempotency-Key there: a repeated key with the same body returns the first
answer and records nothing new; with another body it is 409.

A gateway instance holds sessions (`/_sim/sessions`), which can be placed, moved and
removed; it sends only from a session it holds connected, else 404. With a sessions file,
its sessions survive a restart (or `forget_sessions` drops them, as a gateway that lost its
state would). Faults per instance through `POST /_sim/faults`: an error rate with a status,
the next N requests failing, latency, and a rate of requests that hang past the client's
timeout before being accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from herald.infra.simulators.store import MessageStore

KINDS = ("whatsapp", "email")
_MESSAGE_FIELDS = ("to", "template", "registration_id", "notification_id")


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
            self.sessions_file.write_text(json.dumps(self.sessions))


def create_simulator(kind: str, store_path: Path, *, name: str = "",
                     sessions_file: Path | None = None, forget_sessions: bool = False) -> FastAPI:
    if kind not in KINDS:
        raise ValueError(f"unknown simulator kind {kind!r}; known: {', '.join(KINDS)}")
    instance = Instance(kind, name or kind, MessageStore(store_path), sessions_file)
    if sessions_file is not None and sessions_file.exists() and not forget_sessions:
        instance.sessions = json.loads(sessions_file.read_text())
    instance.save_sessions()  # a forgotten session stays forgotten across the next restart
    app = FastAPI(title=f"Herald {kind} provider simulator ({instance.name})")
    app.state.instance = instance
    _add_control_routes(app, instance)
    if kind == "whatsapp":
        _add_gateway_routes(app, instance)
    else:
        @app.post("/v1/emails")
        async def send_email(request: Request, idempotency_key: str | None = Header(None)) -> JSONResponse:
            return await _send(instance, request, idempotency_key, session_id=None)
    return app


def _add_gateway_routes(app: FastAPI, instance: Instance) -> None:
    @app.post("/sessions/{session_id}/messages")
    async def send_message(session_id: str, request: Request,
                           idempotency_key: str | None = Header(None)) -> JSONResponse:
        return await _send(instance, request, idempotency_key, session_id=session_id)

    @app.get("/sessions/{session_id}")
    async def session_status(session_id: str) -> JSONResponse:
        status = instance.sessions.get(session_id)
        if status is None:
            return JSONResponse({"error": f"session {session_id} is not on {instance.name}"}, 404)
        return JSONResponse({"session_id": session_id, "status": status, "instance": instance.name})

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


async def _send(instance: Instance, request: Request, key: str | None,
                session_id: str | None) -> JSONResponse:
    faults = instance.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.hang_rate and random.random() < faults.hang_rate:
        await asyncio.sleep(faults.hang_s)  # the client gave up; the message still goes out
    elif instance.should_fail():
        instance.store.count("rejected")
        return JSONResponse({"error": "injected failure"}, status_code=faults.status)
    if session_id is not None and instance.sessions.get(session_id) != "connected":
        instance.store.count("rejected")
        return JSONResponse({"error": f"session {session_id} is not connected on {instance.name}"}, 404)
    return _accept(instance, key, await request.body(), session_id)


def _accept(instance: Instance, key: str | None, raw: bytes, session_id: str | None) -> JSONResponse:
    if not key:
        instance.store.count("rejected")
        return JSONResponse({"error": "Idempotency-Key header is required"}, status_code=400)
    try:
        body = json.loads(raw)
        message = {f: body[f] for f in _MESSAGE_FIELDS}
    except (ValueError, KeyError, TypeError) as exc:
        instance.store.count("rejected")
        return JSONResponse({"error": f"malformed message: {exc!r}"}, status_code=422)
    fingerprint = hashlib.sha256(raw).hexdigest()
    accepted = instance.store.accept(key, fingerprint, {**message, "session_id": session_id},
                                     instance.name)
    return JSONResponse(accepted.answer, status_code=accepted.status_code)
