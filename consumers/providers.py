"""HTTP clients for the notification providers, and how their answers are classified."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx

IDEMPOTENCY_KEY = "Idempotency-Key"


class Outcome(Enum):
    SENT = "sent"
    RETRYABLE = "retryable"
    FATAL = "fatal"


@dataclass(frozen=True)
class ProviderResponse:
    outcome: Outcome
    message_id: str | None = None
    error: str | None = None


def classify_status(status_code: int) -> Outcome:
    """2xx sent; timeouts, throttling and server errors may pass; other 4xx never will."""
    if 200 <= status_code < 300:
        return Outcome.SENT
    if status_code in (408, 425, 429) or status_code >= 500:
        return Outcome.RETRYABLE
    return Outcome.FATAL


@dataclass(frozen=True)
class ChannelApi:
    path: str

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "to": request["recipient"],
            "template": request["notification_type"],
            "registration_id": request["registration_id"],
            "notification_id": request["notification_id"],
            "params": {"name": request["participant_name"]},
        }


CHANNEL_APIS = {"whatsapp": ChannelApi("/v1/messages"), "email": ChannelApi("/v1/emails")}


class HttpProvider:
    def __init__(self, base_url: str, channel: str, client: httpx.AsyncClient) -> None:
        self._url = base_url.rstrip("/") + CHANNEL_APIS[channel].path
        self._api = CHANNEL_APIS[channel]
        self._client = client

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        try:
            response = await self._client.post(
                self._url, json=self._api.body(request),
                headers={IDEMPOTENCY_KEY: request["notification_id"]})
        except httpx.TransportError as exc:  # timeouts, refused connections, resets
            return ProviderResponse(Outcome.RETRYABLE, error=f"{type(exc).__name__}: {exc}")
        outcome = classify_status(response.status_code)
        if outcome is Outcome.SENT:
            return ProviderResponse(outcome, message_id=_message_id(response))
        return ProviderResponse(outcome, error=f"HTTP {response.status_code}: {response.text[:200]}")


def _message_id(response: httpx.Response) -> str | None:
    try:
        return str(response.json().get("message_id"))
    except ValueError:
        return None
