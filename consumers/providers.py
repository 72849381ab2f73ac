"""HTTP clients for the notification providers, and how their answers are classified.

Retryable: a timeout, a refused or reset connection, 408, 425, 429 (honouring Retry-After)
and 5xx. Fatal: every other 4xx. Each failure names its class, which the retry topics, the
DLQ and the status stream carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any

import httpx
import orjson

from herald.consumers.http_clients import ProviderClient
from herald.schemas.records import OutgoingRecord

IDEMPOTENCY_KEY = "Idempotency-Key"
# The error class of a request not attempted because an operator paused its endpoint.
ENDPOINT_PAUSED = "EndpointPaused"


class Outcome(Enum):
    SENT = "sent"
    RETRYABLE = "retryable"
    FATAL = "fatal"


@dataclass(frozen=True)
class ProviderResponse:
    outcome: Outcome
    message_id: str | None = None
    error: str | None = None
    error_class: str | None = None
    retry_after_s: float | None = None
    instance: str | None = None  # the gateway instance that answered, when there are several
    status_code: int | None = None  # None: no HTTP answer
    attempted: bool = True  # False: never sent (its endpoint was busy), so no attempt is used up
    # Records to produce with the outcome, in its transaction (a session correction).
    follow_ups: tuple[OutgoingRecord, ...] = ()


def classify_status(status_code: int) -> Outcome:
    """2xx sent; timeouts, throttling and server errors may pass; other 4xx never will."""
    if 200 <= status_code < 300:
        return Outcome.SENT
    if status_code in (408, 425, 429) or status_code >= 500:
        return Outcome.RETRYABLE
    return Outcome.FATAL


def error_class_of(status_code: int) -> str:
    if status_code == 429:
        return "ProviderThrottled"
    if status_code in (408, 425):
        return "ProviderTimeout"
    if status_code >= 500:
        return "ProviderUnavailable"
    return "ProviderRejected"


def transport_failure(exc: httpx.TransportError, instance: str | None = None) -> ProviderResponse:
    """A request that got no answer: always retryable, the provider may never have seen it."""
    error_class = "ProviderTimeout" if isinstance(exc, httpx.TimeoutException) else "ProviderUnreachable"
    return ProviderResponse(Outcome.RETRYABLE, error=f"{type(exc).__name__}: {exc}",
                            error_class=error_class, instance=instance)


def answer(response: httpx.Response, instance: str | None = None) -> ProviderResponse:
    """A provider's HTTP answer as an outcome."""
    outcome = classify_status(response.status_code)
    if outcome is Outcome.SENT:
        return ProviderResponse(outcome, message_id=_message_id(response), instance=instance,
                                status_code=response.status_code)
    return ProviderResponse(outcome, error=f"HTTP {response.status_code}: {response.text[:200]}",
                            status_code=response.status_code,
                            error_class=error_class_of(response.status_code),
                            retry_after_s=retry_after_s(response.headers.get("Retry-After")),
                            instance=instance)


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None if unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class ChannelApi:
    path: str

    def body(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "to": request["recipient"],
            "template": request["template"],
            "subject_id": request["subject_id"],
            "notification_id": request["notification_id"],
            "params": request["params"],
        }


EMAIL_API = ChannelApi("/v1/emails")


class HttpProvider:
    """One provider endpoint (the email provider)."""

    def __init__(self, base_url: str, api: ChannelApi, client: ProviderClient) -> None:
        self._url = base_url.rstrip("/") + api.path
        self._api = api
        self._client = client

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        try:
            response = await self._client.post_json(
                self._url, self._api.body(request), {IDEMPOTENCY_KEY: request["notification_id"]})
        except httpx.TransportError as exc:  # timeouts, refused connections, resets
            return transport_failure(exc)
        return answer(response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _message_id(response: httpx.Response) -> str | None:
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return str(answer.get("message_id")) if isinstance(answer, dict) else None
