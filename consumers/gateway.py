"""The WhatsApp gateway client: sends from the workspace's session, and follows a session that moved.

Sessions live on one of several gateway instances (seed 002). A send goes to the instance
the session directory names. When that instance refuses the connection, or answers 404
for the session, 502 or 503, every instance is probed in parallel; the message goes to the
one that has the session connected, and a correction (the session's event with its new
instance) is produced with the outcome, so the database learns it through the outbox. When
every instance answered and none has it, the message fails as "session lost: reconnect
needed". When some instance did not answer, it may be there: the failure stays retryable.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx

from herald.consumers.http_clients import ProviderClient
from herald.consumers.providers import (
    IDEMPOTENCY_KEY,
    ChannelApi,
    Outcome,
    ProviderResponse,
    answer,
    transport_failure,
)
from herald.consumers.session_directory import KnownSession, SessionDirectory
from herald.schemas import headers as h
from herald.schemas.catalog import SESSION_CORRECTIONS
from herald.schemas.codec import encode
from herald.schemas.records import OutgoingRecord

log = logging.getLogger(__name__)

REDISCOVER_STATUSES = frozenset({404, 502, 503})
WHATSAPP_API = ChannelApi("/messages")  # under /sessions/<session id>


class _Unanswered:
    """A probe some instance did not answer: the session may be there."""


UNANSWERED = _Unanswered()


class GatewayProvider:
    def __init__(self, instances: tuple[str, ...], directory: SessionDirectory,
                 client: ProviderClient) -> None:
        if not instances:
            raise ValueError("no WhatsApp gateway instances configured")
        self._instances = tuple(i.rstrip("/") for i in instances)
        self._directory = directory
        self._client = client
        self._rediscoveries: dict[str, asyncio.Task[str | _Unanswered | None]] = {}
        self.rediscovered = 0  # sessions found on another instance
        self.lost = 0

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        sender = self._directory.sender_for(request["workspace_id"])
        if sender is None:  # retryable: the session's event may not have reached us yet
            return ProviderResponse(Outcome.RETRYABLE, error_class="NoSession",
                                    error=f"workspace {request['workspace_id']!r} has no WhatsApp session")
        instance = self._instance(sender)
        first = await self._post(instance, sender.session_id, request)
        if not _needs_rediscovery(first):
            return first
        found, owner = await self._rediscover(sender.session_id)
        if isinstance(found, _Unanswered):
            return first
        if found is None:
            self.lost += 1
            return ProviderResponse(
                Outcome.FATAL, error_class="SessionLost", instance=instance,
                error=f"session lost: reconnect needed (session {sender.session_id} of workspace "
                      f"{sender.workspace_id} is connected on no gateway instance; {first.error})")
        second = await self._post(found, sender.session_id, request)
        if found == instance or not owner:  # one correction per probe round
            return second
        return replace(second, follow_ups=(self._correction(sender, instance, found),))

    def endpoint_of(self, request: dict[str, Any]) -> str:
        """The instance a request goes to first: the one its workspace's session is on."""
        return self._instance(self._directory.sender_for(request["workspace_id"]))

    def _instance(self, sender: KnownSession | None) -> str:
        return ((sender.instance if sender is not None else None) or self._instances[0]).rstrip("/")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, instance: str, session_id: str, request: dict[str, Any]) -> ProviderResponse:
        try:
            response = await self._client.post_json(
                f"{instance}/sessions/{session_id}{WHATSAPP_API.path}", WHATSAPP_API.body(request),
                {IDEMPOTENCY_KEY: request["notification_id"]})
        except httpx.TransportError as exc:
            return transport_failure(exc, instance)
        return answer(response, instance)

    async def _rediscover(self, session_id: str) -> tuple[str | _Unanswered | None, bool]:
        """One probe round per session at a time: concurrent failures share its answer.
        Also says whether this caller started the round (and so owns its correction)."""
        task = self._rediscoveries.get(session_id)
        owner = task is None
        if task is None:
            task = asyncio.create_task(self._probe_all(session_id))
            self._rediscoveries[session_id] = task
            task.add_done_callback(lambda _t: self._rediscoveries.pop(session_id, None))
        return await asyncio.shield(task), owner

    async def _probe_all(self, session_id: str) -> str | _Unanswered | None:
        answers = await asyncio.gather(*(self._probe(i, session_id) for i in self._instances))
        for instance, status in zip(self._instances, answers, strict=True):
            if status == "connected":
                self._directory.moved(session_id, instance)
                return instance
        if any(status is UNANSWERED for status in answers):
            return UNANSWERED
        return None

    async def _probe(self, instance: str, session_id: str) -> str | _Unanswered | None:
        try:
            response = await self._client.get(f"{instance}/sessions/{session_id}")
        except httpx.TransportError:
            return UNANSWERED
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            return UNANSWERED
        try:
            return str(response.json().get("status"))
        except (ValueError, AttributeError):  # not JSON, or not an object
            return UNANSWERED

    def _correction(self, sender: KnownSession, was: str, found: str) -> OutgoingRecord:
        self.rediscovered += 1
        log.info("session %s found on %s (directory said %s)", sender.session_id, found, was)
        now = datetime.now(UTC)
        event = {**sender.event, "event_id": str(uuid.uuid4()), "status": "connected",
                 "gateway_instance": found, "occurred_at": now,
                 "metadata": {**sender.event["metadata"], "previous_instance": was,
                              "corrected_by": "delivery", "corrected_at": h.iso(now)}}
        headers = {h.EVENT_ID: event["event_id"], h.EVENT_TYPE: "session.reassigned",
                   h.CORRELATION_ID: event["event_id"], h.TRACEPARENT: h.new_traceparent(),
                   h.PRODUCED_AT: h.iso(now)}
        return OutgoingRecord(SESSION_CORRECTIONS, sender.session_id.encode(),
                              encode("herald.SessionEvent", event), headers)


def _needs_rediscovery(response: ProviderResponse) -> bool:
    # Refused or reset: the instance is gone. A timeout is not a reason: it may be slow.
    return response.error_class == "ProviderUnreachable" or response.status_code in REDISCOVER_STATUSES
