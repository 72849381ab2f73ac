"""Webhook receivers (merchant endpoints) that verify every signature with Standard Webhooks'
reference library (`standardwebhooks`), never with Herald's own code, and count what they took.

Each endpoint, `POST /hooks/<endpoint>`, has a secret of its own (a merchant that rotated
holds only the new one) and behaviours set through `PUT /_sim/endpoints/<endpoint>`: gone
(410 for everything), the next N deliveries answered with a status (503, 429, with an
optional Retry-After), latency. A delivery whose signature does not verify, or whose
timestamp is stale, is answered 401 and counted as `bad_signature`. A verified delivery is
recorded by its `webhook-id`; the same id again is a `repeat` (a receiver drops it), answered
200 as the first was. Every attempt is kept with its time and answer, so a caller can check
that a retry never came before its due time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from herald.proving.simulators.store_routes import add_store_routes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    webhook_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    type TEXT NOT NULL,
    subject_id TEXT,
    request_id TEXT,
    receptions INTEGER NOT NULL,
    accepted_at_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    webhook_id TEXT, endpoint TEXT NOT NULL, status INTEGER NOT NULL, at_ms REAL NOT NULL
);
"""


class Endpoint(BaseModel):
    secret: str = Field(description="The whsec_ secret this endpoint verifies with.")
    gone: bool = Field(False, description="Answer 410 Gone to everything.")
    fail_next: int = Field(0, ge=0, description="Answer the next N verified deliveries with `status`.")
    status: int = Field(503, ge=400, le=599)
    retry_after_s: int | None = Field(None, ge=0, description="Sent as Retry-After with `status`.")
    latency_ms: float = Field(0.0, ge=0.0)


class WebhookStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def attempt(self, webhook_id: str | None, endpoint: str, status: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO attempts VALUES (?, ?, ?, ?)",
                             (webhook_id, endpoint, status, time.time() * 1000))

    def accept(self, webhook_id: str, endpoint: str, event: dict[str, Any], request_id: str | None) -> None:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        with self._lock:
            self._db.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (webhook_id) "
                "DO UPDATE SET receptions = receptions + 1",
                (webhook_id, endpoint, str(event.get("type")), data.get("subject_id"), request_id,
                 time.time() * 1000))

    def accepted(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM deliveries").fetchone()[0])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute(
                "SELECT endpoint, count(*), sum(receptions - 1) FROM deliveries GROUP BY endpoint").fetchall()
            answers = self._db.execute(
                "SELECT endpoint, status, count(*) FROM attempts GROUP BY endpoint, status").fetchall()
        by_endpoint: dict[str, dict[str, Any]] = {
            endpoint: {"accepted": n, "repeats": repeats, "answers": {}} for endpoint, n, repeats in rows}
        for endpoint, status, n in answers:
            row = by_endpoint.setdefault(endpoint, {"accepted": 0, "repeats": 0, "answers": {}})
            row["answers"][str(status)] = n
        return {"kind": "webhook", "accepted": sum(r["accepted"] for r in by_endpoint.values()),
                "repeats": sum(r["repeats"] for r in by_endpoint.values()),
                "bad_signature": sum(r["answers"].get("401", 0) for r in by_endpoint.values()),
                "by_endpoint": by_endpoint}

    def messages(self) -> list[dict[str, Any]]:
        """The deliveries accepted, one per webhook-id."""
        with self._lock:
            rows = self._db.execute("SELECT webhook_id, endpoint, type, subject_id, request_id, receptions, "
                                    "accepted_at_ms FROM deliveries ORDER BY accepted_at_ms").fetchall()
        keys = ("webhook_id", "endpoint", "type", "subject_id", "request_id", "receptions", "accepted_at_ms")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def attempts(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT webhook_id, endpoint, status, at_ms FROM attempts "
                                    "ORDER BY at_ms").fetchall()
        return [{"webhook_id": r[0], "endpoint": r[1], "status": r[2], "at_ms": r[3]} for r in rows]


class Receiver:
    """The endpoints and what they answer; `answer` is one delivery, verified or not."""

    def __init__(self, store: WebhookStore) -> None:
        self.store = store
        self.endpoints: dict[str, Endpoint] = {}

    async def answer(self, name: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any],
                                                                                    dict[str, str]]:
        endpoint = self.endpoints.get(name)
        webhook_id = headers.get("webhook-id")
        if endpoint is None:
            return self._answered(webhook_id, name, 404, {"error": f"no endpoint {name}"})
        if endpoint.latency_ms:
            await asyncio.sleep(endpoint.latency_ms / 1000)
        if endpoint.gone:
            return self._answered(webhook_id, name, 410, {"error": "this endpoint was removed"})
        try:
            event = Webhook(endpoint.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            return self._answered(webhook_id, name, 401, {"error": f"signature: {exc}"})
        if endpoint.fail_next > 0:
            endpoint.fail_next -= 1
            extra = {"Retry-After": str(endpoint.retry_after_s)} if endpoint.retry_after_s is not None else {}
            return self._answered(webhook_id, name, endpoint.status, {"error": "injected failure"}, extra)
        assert webhook_id is not None  # verify() requires it
        self.store.accept(webhook_id, name, event, headers.get("x-request-id"))
        return self._answered(webhook_id, name, 200, {"received": webhook_id})

    def _answered(self, webhook_id: str | None, name: str, status: int, answer: dict[str, Any],
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.store.attempt(webhook_id, name, status)
        return status, answer, headers or {}


class HookFastPath:
    """`POST /hooks/<endpoint>` as plain ASGI in front of FastAPI (the control API): the
    receiver shares the machine with what it measures."""

    def __init__(self, app: FastAPI, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith("/hooks/"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, answer, extra = await self.receiver.answer(path.removeprefix("/hooks/"), b"".join(chunks),
                                                           headers)
        payload = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                *((k.encode(), v.encode()) for k, v in extra.items())]})
        await send({"type": "http.response.body", "body": payload})


def create_webhook_receiver(store_path: Path, endpoints: dict[str, Endpoint] | None = None) -> HookFastPath:
    receiver = Receiver(WebhookStore(store_path))
    receiver.endpoints.update(endpoints or {})
    app = FastAPI(title="Herald webhook receiver simulator")

    @app.put("/_sim/endpoints/{name}")
    async def put_endpoint(name: str, endpoint: Endpoint) -> dict[str, Any]:
        receiver.endpoints[name] = endpoint
        return {"endpoint": name, **endpoint.model_dump(exclude={"secret"})}

    @app.get("/_sim/endpoints/{name}")
    async def get_endpoint(name: str) -> dict[str, Any]:
        if name not in receiver.endpoints:
            raise HTTPException(404, f"no endpoint {name}")
        return {"endpoint": name, **receiver.endpoints[name].model_dump(exclude={"secret"})}

    add_store_routes(app, receiver.store)

    @app.get("/_sim/attempts")
    async def attempts() -> list[dict[str, Any]]:
        return receiver.store.attempts()

    return HookFastPath(app, receiver)
