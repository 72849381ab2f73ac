"""A notification's whole story: the history indexer's process, and what ops ask of its table.

`herald notifications show KEY` and `GET /v1/notifications` answer "did order 42 get its
receipt, and when?": every notification of an event key (or a recipient), each with its
timeline (requested, every attempt that failed with its error class and the retry's due time,
sent with the provider's message id, dead-lettered, replayed), recipients masked for viewers.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer
from sqlalchemy.orm import Session

from herald.consumers.history_index import HistoryIndexConfig, HistoryIndexer, HistoryStats, history_topics
from herald.infra.kafka_io import consumer_config, membership_config, off_path_fetch, process_client_id
from herald.infra.logs import log_start, log_stop
from herald.infra.masking import mask_text
from herald.infra.settings import Settings
from herald.ops.bootstrap import _names, reachable_endpoints, use_schema_registry
from herald.ops.rejoin import run_rejoining
from herald.schemas import headers as h
from herald.schemas.catalog import HISTORY_INDEX_STAGE, consumer_group
from herald.schemas.catalog_model import Catalog
from herald.schemas.tables import HISTORY_KINDS, NotificationHistoryEntry

log = logging.getLogger(__name__)
MAX_NOTIFICATIONS = 200  # per answer: a recipient with more narrows by type, status or since


def history_group(settings: Settings) -> str:
    return consumer_group(HISTORY_INDEX_STAGE, "history", settings.namespace)


def run_history_index(settings: Settings, catalog: Catalog, stop: threading.Event,
                      drain: bool = False, rebuild: bool = False) -> HistoryStats:
    """Index every request and outcome until stopped (or, with drain, caught up). `rebuild`
    reads the topics from their start under a group of its own, until caught up: a lost or
    emptied table gets back every row the topics still hold, and rows it has are left alone."""
    endpoints = reachable_endpoints(settings)
    use_schema_registry(settings, catalog)
    engine = sa.create_engine(endpoints.database_url, pool_pre_ping=True)
    topics = history_topics(tuple(catalog.channels))
    config = HistoryIndexConfig(settings.namespace, topics, settings.history_retention_days)
    group = history_group(settings) + (f".rebuild-{uuid.uuid4().hex[:8]}" if rebuild else "")
    one_off = drain or rebuild  # beside the long-lived indexer: never under its instance id

    def index_once() -> HistoryStats:
        consumer = Consumer(consumer_config(endpoints.kafka_bootstrap, group, **membership_config(
            settings.kafka_session_timeout_s, "" if one_off else settings.instance_id,
            process_client_id("history-index")), **off_path_fetch()))
        return HistoryIndexer(config, consumer, engine).run(stop, one_off)

    log_start(log, "history index", consumes=_names(settings, *topics),
              produces=["the notification_history table"], groups=[group])
    try:
        stats: HistoryStats = run_rejoining(index_once, "the history index", stop)
    finally:
        engine.dispose()
    log_stop(log, "history index", stats)
    return stats


@dataclass(frozen=True)
class StoryQuery:
    key: str | None = None  # the triggering event's key (an order id), or a notification id
    recipient: str | None = None
    notification_type: str | None = None
    status: str | None = None  # the notification's latest outcome (or "requested": none yet)
    since: datetime | None = None  # notifications with a moment at or after this
    field: tuple[str, str] | None = None  # (name, value) of the triggering event's mapped fields

    def problems(self) -> list[str]:
        """What is wrong with the query, in words (the API answers 422 with them)."""
        found = []
        if not (self.key or self.recipient or self.field):
            found.append("give a key (an event key or a notification id), a recipient or an event field")
        if self.status is not None and self.status not in HISTORY_KINDS:
            found.append(f"status must be one of {', '.join(HISTORY_KINDS)}")
        return found


def _matching_ids(conn: sa.Connection, query: StoryQuery) -> list[str]:
    entry = NotificationHistoryEntry
    statement = sa.select(entry.notification_id).distinct()
    if query.key:
        statement = statement.where(sa.or_(entry.subject_id == query.key, entry.notification_id == query.key))
    if query.recipient:
        statement = statement.where(entry.recipient == query.recipient)
    if query.notification_type:
        statement = statement.where(entry.notification_type == query.notification_type)
    if query.since:
        statement = statement.where(entry.occurred_at >= query.since)
    if query.field:
        name, value = query.field
        statement = statement.where(entry.event_fields[name].astext == value)
    return list(conn.execute(statement.limit(MAX_NOTIFICATIONS * 5)).scalars())


def notification_stories(engine: sa.Engine, query: StoryQuery, mask: bool) -> list[dict[str, Any]]:
    """Every matching notification with its timeline, oldest moment first; newest stories first."""
    entry = NotificationHistoryEntry
    with Session(engine) as session:
        ids = _matching_ids(session.connection(), query)
        rows = session.scalars(sa.select(entry).where(entry.notification_id.in_(ids))
                               .order_by(entry.occurred_at, entry.id)).all() if ids else []
    stories: dict[str, list[NotificationHistoryEntry]] = {}
    for row in rows:
        stories.setdefault(row.notification_id, []).append(row)
    told = [story(moments, mask) for moments in stories.values()]
    if query.status:
        told = [s for s in told if s["status"] == query.status]
    told.sort(key=lambda s: s["last_at"], reverse=True)
    return told[:MAX_NOTIFICATIONS]


def story(moments: Sequence[NotificationHistoryEntry], mask: bool) -> dict[str, Any]:
    """One notification: what it is, where it stands, and each moment of it."""
    first, outcomes = moments[0], [m for m in moments if m.kind not in ("requested", "replayed")]
    # A notification requested again (a resend of a missing one) keeps its id: say so.
    again = {id(m) for m in [m for m in moments if m.kind == "requested"][1:]}
    recipient = next((m.recipient for m in moments if m.recipient), None)
    return {
        "notification_id": first.notification_id, "subject_id": first.subject_id,
        "notification_type": first.notification_type, "channel": first.channel,
        "recipient": mask_text(recipient) if mask and recipient else recipient,
        "status": outcomes[-1].kind if outcomes else "requested",
        "last_at": h.iso(moments[-1].occurred_at),
        "timeline": [_moment(m, mask, resent=id(m) in again) for m in moments],
    }


def _moment(entry: NotificationHistoryEntry, mask: bool, resent: bool) -> dict[str, Any]:
    moment: dict[str, Any] = {"at": h.iso(entry.occurred_at), "kind": "resent" if resent else entry.kind}
    for name in ("attempts", "error_class", "error", "provider_message_id", "gateway_instance", "trace_id"):
        if (value := getattr(entry, name)) is not None:
            moment[name] = value
    if mask and "error" in moment:  # a provider's refusal may quote the address
        moment["error"] = mask_text(moment["error"])
    if entry.due_at is not None:
        moment["due_at"] = h.iso(entry.due_at)
    return moment
