"""What one request record becomes: the provider call, then sent, a retry on a tier, or a dead letter.

One small hook, as in dramatiq's retries: fatal goes to the DLQ, retryable goes to the tier
the retry policy picks until attempts or age run out, then to the DLQ. Every outcome also
goes to `notifications.status`. The worker produces these records and commits the input's
offset in one Kafka transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from herald.consumers.outcomes import status_record
from herald.consumers.providers import ENDPOINT_PAUSED, Outcome, ProviderResponse
from herald.consumers.retry_policy import GiveUp, Retry, RetryPolicy, defer_step, next_step
from herald.infra import tracing
from herald.infra.latency import LatencyHistogram
from herald.infra.logs import bind
from herald.schemas import headers as h
from herald.schemas.catalog import notification_topic, retry_topic
from herald.schemas.codec import UndecodableRecord, decode_expecting
from herald.schemas.records import Failure, OutgoingRecord, SourceRecord, dead_letter, retry_record

log = logging.getLogger(__name__)


class Provider(Protocol):
    async def send(self, request: dict[str, Any]) -> ProviderResponse: ...

    async def aclose(self) -> None: ...


@dataclass
class DeliveryCounts:
    """Countable outcomes: tests and the bench assert these instead of sleeping."""

    sent: int = 0
    retries_scheduled: int = 0
    deferred: int = 0  # not attempted, its endpoint at its limit: retried without using an attempt
    dead_lettered: int = 0
    undecodable: int = 0
    by_error_class: dict[str, int] = field(default_factory=dict)
    retries_by_tier: dict[int, int] = field(default_factory=dict)  # retry pressure


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ChannelDelivery:
    """The record handler of one channel's workers (request topic and retry tiers alike)."""

    def __init__(self, channel: str, consumer_group: str, policy: RetryPolicy, provider: Provider,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self._channel = channel
        self._group = consumer_group
        self._policy = policy
        self._provider = provider
        self._clock = clock
        self.counts = DeliveryCounts()
        self.latency = LatencyHistogram()  # of provider calls, whatever their outcome

    def due_at(self, source: SourceRecord) -> datetime | None:
        """When the record may be attempted: a retry's due time; None means now."""
        return h.parse_iso(source.headers.get(h.DUE_AT))

    async def aclose(self) -> None:
        await self._provider.aclose()

    async def handle(self, source: SourceRecord) -> list[OutgoingRecord]:
        # Every log line of this record, and its provider call, carry the record's trace.
        bind(request_id=source.headers.get(h.CORRELATION_ID),
             trace_id=h.trace_id_of(source.headers.get(h.TRACEPARENT)))
        try:
            request = decode_expecting(source.value, "herald.NotificationRequest")
        except UndecodableRecord as exc:
            self.counts.undecodable += 1
            return self._dead(source, None, Failure("UndecodableRecord", str(exc), 0, self._clock()))
        if not tracing.enabled():
            return await self._attempt(source, request)
        span = tracing.span_under(source.headers.get(h.TRACEPARENT), f"deliver {self._channel}",
                                  tracing.SpanKind.CONSUMER, {
                                      "messaging.system": "kafka", "messaging.source.name": source.topic,
                                      "herald.notification_id": str(request["notification_id"]),
                                      "herald.attempt": _attempts_before(source) + 1})
        # What this attempt writes (its status, a retry, a dead letter) is the attempt's child.
        traced = replace(source, headers={**source.headers, h.TRACEPARENT: tracing.traceparent_of(span)})
        error: str | None = "Cancelled"
        try:
            with tracing.activated(span):
                records = await self._attempt(traced, request)
            error = None
            return records
        finally:
            tracing.end_span(span, error)

    async def _attempt(self, source: SourceRecord, request: dict[str, Any]) -> list[OutgoingRecord]:
        """One provider call and what it leads to."""
        attempts = _attempts_before(source) + 1
        started = time.perf_counter()
        response = await self._provider.send(request)
        self.latency.observe(time.perf_counter() - started)
        if tracing.enabled():
            tracing.mark_current(response.outcome.value, response.error_class)
        now = self._clock()
        follow_ups = list(response.follow_ups)
        if response.outcome is Outcome.SENT:
            self.counts.sent += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s sent to %s (attempt %d)", request["notification_id"], response.instance,
                          attempts)
            return [status_record(source, request, status="sent", attempts=attempts,
                                  message_id=response.message_id, instance=response.instance),
                    *follow_ups]
        if not response.attempted:  # deferred before any attempt: its endpoint was busy
            attempts -= 1
        failure = Failure(response.error_class or "ProviderError",
                          response.error or "unknown provider error", attempts, now)
        self._count_error(failure.error_class)
        if not response.attempted:
            return [*self._defer(source, request, failure, response), *follow_ups]
        if response.outcome is Outcome.FATAL:
            return [*self._dead(source, request, failure, response.instance), *follow_ups]
        return [*self._retry_or_dead(source, request, failure, response), *follow_ups]

    def _retry_or_dead(self, source: SourceRecord, request: dict[str, Any], failure: Failure,
                       response: ProviderResponse) -> list[OutgoingRecord]:
        previous_ms = source.headers.get(h.RETRY_DELAY_MS, "")
        step = next_step(self._policy, attempts=failure.attempts,
                         first_failed_at=_first_failed_at(source, failure), now=failure.at,
                         retry_after_s=response.retry_after_s,
                         previous_delay_s=int(previous_ms) / 1000 if previous_ms.isdigit() else None)
        if isinstance(step, GiveUp):
            given_up = Failure(step.error_class, f"{step.reason}; last error: {failure.error_message}",
                               failure.attempts, failure.at)
            return self._dead(source, request, given_up, response.instance)
        self.counts.retries_scheduled += 1
        self.counts.retries_by_tier[step.tier] = self.counts.retries_by_tier.get(step.tier, 0) + 1
        return self._on_tier(source, request, failure, step, response.instance)

    def _defer(self, source: SourceRecord, request: dict[str, Any], failure: Failure,
               response: ProviderResponse) -> list[OutgoingRecord]:
        step = defer_step(self._policy, first_failed_at=_first_failed_at(source, failure), now=failure.at,
                          delay_s=response.retry_after_s or self._policy.tiers_s[0],
                          bounded_by_age=failure.error_class != ENDPOINT_PAUSED)
        if isinstance(step, GiveUp):
            return self._dead(source, request, Failure(step.error_class, step.reason, failure.attempts,
                                                       failure.at), response.instance)
        self.counts.deferred += 1
        retry, status = self._on_tier(source, request, failure, step, response.instance)
        if h.RETRY_DELAY_MS in source.headers:  # the backoff goes on from the last real attempt's delay
            retry.headers[h.RETRY_DELAY_MS] = source.headers[h.RETRY_DELAY_MS]
        return [retry, status]

    def _on_tier(self, source: SourceRecord, request: dict[str, Any], failure: Failure, step: Retry,
                 instance: str | None) -> list[OutgoingRecord]:
        """The request on the retry tier `step` names, and its `retry_scheduled` status."""
        tier_topic = retry_topic(notification_topic(self._channel), step.tier)
        return [retry_record(source, tier_topic, failure, step.due_at, step.delay_s),
                status_record(source, request, status="retry_scheduled", attempts=failure.attempts,
                              error=failure.error_message, error_class=failure.error_class,
                              due_at=step.due_at, instance=instance)]

    def _dead(self, source: SourceRecord, request: dict[str, Any] | None, failure: Failure,
              instance: str | None = None) -> list[OutgoingRecord]:
        self.counts.dead_lettered += 1
        # The trace id is in the line's context (bound in `handle`): it finds the whole story.
        log.warning("dead-lettered %s after %d attempt(s): %s: %s (%s[%d]@%d)",
                    request["notification_id"] if request else "an undecodable record", failure.attempts,
                    failure.error_class, failure.error_message, source.topic, source.partition, source.offset)
        records = [dead_letter(source, failure.error_class, failure.error_message,
                               consumer_group=self._group, attempts=failure.attempts,
                               failed_at=failure.at)]
        if request is not None:  # an undecodable record has no notification to report on
            records.append(status_record(source, request, status="dead_lettered",
                                         attempts=failure.attempts, error=failure.error_message,
                                         error_class=failure.error_class, instance=instance))
        return records

    def _count_error(self, error_class: str) -> None:
        self.counts.by_error_class[error_class] = self.counts.by_error_class.get(error_class, 0) + 1


def _first_failed_at(source: SourceRecord, failure: Failure) -> datetime:
    """When the notification first failed: kept on its record since, else this failure."""
    return h.parse_iso(source.headers.get(h.FIRST_FAILED_AT)) or failure.at


def _attempts_before(source: SourceRecord) -> int:
    raw = source.headers.get(h.ATTEMPT, "0")
    return int(raw) if raw.isdigit() else 0
