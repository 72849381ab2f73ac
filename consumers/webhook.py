"""The `webhook` channel kind: the event, POSTed as JSON and signed per Standard Webhooks.

Headers (https://www.standardwebhooks.com): `webhook-id` is the notification id, the same on
every attempt, so a receiver drops a repeat; `webhook-timestamp` is the attempt's time in
Unix seconds; `webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, once
per secret during a rotation, space-separated, so a receiver holding either secret accepts.
`X-Request-ID` carries the request's correlation id through (seed 003).

The body is `{"type", "timestamp", "data"}`: the triggering event's type, when it happened,
and the notification's parameters with its ids. The endpoint is the channel's `url`, or the
recipient (a field of the event: a merchant's URL). 2xx is sent; 408, 425, 429 and 5xx are
retryable (Retry-After honoured); 410 Gone is fatal as `EndpointGone` (the receiver says the
endpoint is no more); any other answer is fatal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import orjson

from herald.consumers.http_clients import ProviderClient
from herald.consumers.providers import Outcome, ProviderResponse, answer, transport_failure
from herald.infra.logs import REQUEST_ID
from herald.schemas import headers as h
from herald.schemas.catalog_model import ChannelSpec
from herald.schemas.catalog_refs import connection_list

WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
REQUEST_ID_HEADER = "X-Request-ID"
_SECRET_PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    """A Standard Webhooks secret (`whsec_` + base64) as the HMAC key."""
    return base64.b64decode(secret.removeprefix(_SECRET_PREFIX))


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(keys: tuple[bytes, ...], message_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(signature(key, message_id, timestamp, body) for key in keys)


def webhook_body(request: Mapping[str, Any]) -> bytes:
    """The event as the receiver sees it; the same bytes on every attempt."""
    occurred = request["source_occurred_at"]
    return orjson.dumps({
        "type": request.get("event_type") or request["notification_type"],
        "timestamp": h.iso(occurred) if isinstance(occurred, datetime) else str(occurred),
        "data": {**request["params"], "notification_id": request["notification_id"],
                 "notification_type": request["notification_type"], "subject_id": request["subject_id"]},
    }, option=orjson.OPT_SORT_KEYS)


def signed_headers(keys: tuple[bytes, ...], request: Mapping[str, Any], body: bytes,
                   timestamp: int) -> dict[str, str]:
    """One attempt's headers: the same id every time, this attempt's time and signatures."""
    headers = {WEBHOOK_ID: request["notification_id"], WEBHOOK_TIMESTAMP: str(timestamp),
               WEBHOOK_SIGNATURE: signature_header(keys, request["notification_id"], timestamp, body)}
    request_id = REQUEST_ID.get()
    return {**headers, REQUEST_ID_HEADER: request_id} if request_id else headers


@dataclass(frozen=True)
class WebhookConfig:
    url: str | None  # None: each request's recipient is its endpoint
    keys: tuple[bytes, ...]  # the current secret first, then those being rotated out

    @classmethod
    def of(cls, spec: ChannelSpec) -> WebhookConfig:
        urls = connection_list(spec, "url")
        return cls(urls[0] if urls else None,
                   tuple(secret_bytes(s) for s in connection_list(spec, "secrets")))


class WebhookProvider:
    def __init__(self, config: WebhookConfig, client: ProviderClient,
                 clock: Any = time.time) -> None:
        if not config.keys:
            raise ValueError("a webhook channel needs at least one signing secret")
        self._config = config
        self._client = client
        self._clock = clock

    def endpoint_of(self, request: Mapping[str, Any]) -> str:
        return self._config.url or str(request["recipient"])

    def signed_headers(self, request: Mapping[str, Any], body: bytes) -> dict[str, str]:
        return signed_headers(self._config.keys, request, body, int(self._clock()))

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        endpoint = self.endpoint_of(request)
        if not endpoint.startswith(("http://", "https://")):
            return ProviderResponse(Outcome.FATAL, error_class="InvalidEndpoint",
                                    error="the webhook endpoint is no http:// or https:// URL")
        body = webhook_body(request)
        try:
            response = await self._client.post(endpoint, body, self.signed_headers(request, body))
        except httpx.TransportError as exc:
            return transport_failure(exc)
        except httpx.InvalidURL:
            return ProviderResponse(Outcome.FATAL, error_class="InvalidEndpoint",
                                    error="the webhook endpoint is no valid URL")
        outcome = answer(response)
        if response.status_code == 410:
            return replace(outcome, error_class="EndpointGone",
                           error="HTTP 410 Gone: the receiver retired this endpoint")
        return outcome

    async def aclose(self) -> None:
        await self._client.aclose()
