"""A gateway instance's periodic report of its sessions to `gateway.observations`.

A real gateway would send the same record (or post it): every session it holds with its
state, keyed by its own base URL. The session reconciler compares these reports with what
the database declares. A killed instance stops reporting, as a crashed one would.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Producer

from herald.infra.kafka_io import producer_config
from herald.schemas.codec import encode
from herald.schemas.records import derived_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportTarget:
    bootstrap: str
    topic: str  # as on the broker
    instance: str  # the base URL sessions name this instance by
    interval_s: float = 2.0


def observation_record(instance: str, name: str, sessions: Mapping[str, str], interval_s: float,
                       at: datetime) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "instance": instance, "instance_name": name or None,
            "observed_at": at, "report_interval_ms": int(interval_s * 1000),
            "sessions": [{"session_id": s, "status": status} for s, status in sorted(sessions.items())]}


async def report_sessions(target: ReportTarget, name: str, sessions: Callable[[], Mapping[str, str]]) -> None:
    """Report every `interval_s` until cancelled; a broker that is away only delays reports."""
    producer = Producer(producer_config(target.bootstrap, ack_timeout_s=max(target.interval_s * 5, 10)))
    try:
        while True:
            record = observation_record(target.instance, name, sessions(), target.interval_s,
                                        datetime.now(UTC))
            headers = derived_headers({}, str(record["event_id"]), "gateway.observation")
            producer.produce(target.topic, key=target.instance.encode(),
                             value=encode("herald.GatewayObservation", record),
                             headers=list(headers.items()), on_delivery=_log_failure)
            producer.poll(0)
            await asyncio.sleep(target.interval_s)
    finally:
        producer.flush(5)


def _log_failure(error: object, _message: object) -> None:
    if error is not None:
        log.warning("a session report was not delivered: %s", error)
