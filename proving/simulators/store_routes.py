"""The read-only control routes every receiving simulator serves from its store: what it took."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI


class CountingStore(Protocol):
    def stats(self) -> dict[str, Any]: ...

    def accepted(self) -> int: ...

    def messages(self) -> list[dict[str, Any]]: ...


def add_store_routes(app: FastAPI, store: CountingStore) -> None:
    """`/_sim/stats`, `/_sim/accepted` (the count alone, cheap to poll) and `/_sim/messages`."""

    @app.get("/_sim/stats")
    async def stats() -> dict[str, Any]:
        return store.stats()

    @app.get("/_sim/accepted")
    async def accepted() -> dict[str, int]:
        return {"accepted": store.accepted()}

    @app.get("/_sim/messages")
    async def messages() -> list[dict[str, Any]]:
        return store.messages()
