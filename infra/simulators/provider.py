"""A provider simulator (WhatsApp gateway or email provider).

It records every accepted message and honours Idempotency-Key: a repeated key with the
same body returns the first answer and records nothing new; with another body it is 409.
`duplicates` counts messages accepted twice for one (registration, template, recipient)
under different keys, which is what a person would receive twice. Faults are injected
through `POST /_sim/faults`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

PATHS = {"whatsapp": "/v1/messages", "email": "/v1/emails"}


class Faults(BaseModel):
    fail_next: int = Field(0, ge=0, description="Answer the next N requests with `status`.")
    status: int = Field(503, ge=400, le=599)
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Chance any request fails.")
    latency_ms: float = Field(0.0, ge=0.0)


@dataclass
class SimulatorState:
    kind: str
    faults: Faults = field(default_factory=Faults)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    by_key: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    replays: int = 0
    rejected: int = 0

    def stats(self) -> dict[str, Any]:
        per_message = Counter((m["registration_id"], m["template"], m["to"]) for m in self.accepted)
        return {"kind": self.kind, "accepted": len(self.accepted), "replays": self.replays,
                "rejected": self.rejected,
                "duplicates": sum(n - 1 for n in per_message.values() if n > 1)}

    def should_fail(self) -> bool:
        if self.faults.fail_next > 0:
            self.faults.fail_next -= 1
            return True
        return self.faults.error_rate > 0 and random.random() < self.faults.error_rate


def create_simulator(kind: str) -> FastAPI:
    if kind not in PATHS:
        raise ValueError(f"unknown simulator kind {kind!r}; known: {', '.join(PATHS)}")
    app = FastAPI(title=f"Herald {kind} provider simulator")
    state = SimulatorState(kind)
    app.state.simulator = state

    @app.post(PATHS[kind])
    async def accept(request: Request,
                     idempotency_key: str | None = Header(None)) -> JSONResponse:
        if state.faults.latency_ms:
            await asyncio.sleep(state.faults.latency_ms / 1000)
        if state.should_fail():
            state.rejected += 1
            return JSONResponse({"error": "injected failure"}, status_code=state.faults.status)
        return _accept(state, idempotency_key, await request.body())

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return state.stats()

    @app.get("/_sim/messages")
    async def messages() -> list[dict[str, Any]]:
        return state.accepted

    @app.post("/_sim/faults")
    async def set_faults(faults: Faults) -> dict[str, Any]:
        state.faults = faults
        return faults.model_dump()

    return app


def _accept(state: SimulatorState, key: str | None, raw: bytes) -> JSONResponse:
    if not key:
        state.rejected += 1
        return JSONResponse({"error": "Idempotency-Key header is required"}, status_code=400)
    try:
        body = json.loads(raw)
        message = {f: body[f] for f in ("to", "template", "registration_id", "notification_id")}
    except (ValueError, KeyError, TypeError) as exc:
        state.rejected += 1
        return JSONResponse({"error": f"malformed message: {exc!r}"}, status_code=422)
    fingerprint = hashlib.sha256(raw).hexdigest()
    if key in state.by_key:
        first_fingerprint, first_answer = state.by_key[key]
        if first_fingerprint != fingerprint:
            return JSONResponse({"error": "Idempotency-Key reused with another body"}, status_code=409)
        state.replays += 1
        return JSONResponse(first_answer, status_code=200)
    answer = {"message_id": str(uuid.uuid4()), "status": "accepted"}
    state.by_key[key] = (fingerprint, answer)
    state.accepted.append({**message, "idempotency_key": key, "message_id": answer["message_id"],
                           "accepted_at_ms": time.time() * 1000})
    return JSONResponse(answer, status_code=201)
