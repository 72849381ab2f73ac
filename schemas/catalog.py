"""The topic catalog: every topic Herald uses, with its partitions, cleanup policy and retention.

Topic names come from the small functions here, never from literals elsewhere: Herald's
own topics, and those the declared catalog calls for (each event kind's, each channel's
requests, retry tiers and dead letters). A `namespace` prefixes every name so several
pipelines (or tests) share one cluster apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from herald.schemas.catalog_model import RESERVED_CHANNELS, Catalog
from herald.schemas.codec import full_name

SESSION_EVENTS = "sessions.events"
NOTIFICATION_STATUS = "notifications.status"
# Notifications past their SLA and not delivered: compacted, a tombstone once delivered.
MISSING_NOTIFICATIONS = "notifications.missing"
# Corrections a delivery worker observed (a session found on another gateway instance),
# applied to the database through the outbox by `herald corrections`.
SESSION_CORRECTIONS = "sessions.corrections"
RETRY_TIERS = 3  # retry topics per channel; their delays are settings
# The missing-notification detector's own inputs, keyed by subject id (the event key) so they
# are co-partitioned with the event topics: sent statuses, and deadline checks.
MISSING_DELIVERIES = "streams.missing.deliveries"
MISSING_CHECKS = "streams.missing.checks"
# Each gateway instance's periodic report of the sessions it holds, keyed by instance.
GATEWAY_OBSERVATIONS = "gateway.observations"
# Sessions whose declared and observed states disagree: compacted, a tombstone once resolved.
SESSION_MISMATCHES = "sessions.mismatches"
# The session reconciler's re-evaluations, keyed by session id (co-partitioned with
# sessions.events), asked for by the timer of whichever worker saw a verdict change.
SESSION_CHECKS = "streams.sessions.checks"
# Per-minute counts of outcomes by type, channel and status, for analysts (compacted).
STATUS_STATS = "notifications.status.stats"
# The status counter's partial counts per input partition, keyed by window and group, so
# one agent per key sums them (each partial only grows: repeats and reorders are harmless).
STATUS_PARTIALS = "streams.status.partials"
# Operators' pauses and resumes of channels: kept whole, the audit log and the state at once.
CHANNEL_CONTROL = "channels.control"

_DAY_MS = 24 * 60 * 60 * 1000
REQUEST_DAYS = 7  # how long a channel's request topic keeps its records
HISTORY_DAYS = REQUEST_DAYS  # how far back the notification history can be rebuilt from the topics


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str  # "delete" or "compact"
    retention_ms: int  # -1 keeps records forever (compacted topics)
    key: str  # what the record key is, for humans and docs
    value_schema: str
    min_compaction_lag_ms: int = 0  # a compacted topic keeps every record at least this long
    # The active segment rolls after this long (0: Kafka's default, 7 days or 1 GiB); compaction
    # never touches the active segment.
    segment_ms: int = 0

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.min_compaction_lag_ms:
            config["min.compaction.lag.ms"] = str(self.min_compaction_lag_ms)
        if self.segment_ms:
            config["segment.ms"] = str(self.segment_ms)
        return config


def qualified(name: str, namespace: str = "") -> str:
    """The topic name as it exists on the broker."""
    return f"{namespace}.{name}" if namespace else name


def notification_topic(channel: str) -> str:
    """A channel's request topic."""
    return f"notifications.{channel}"


def channel_of_topic(topic: str) -> str | None:
    """The channel whose request, retry or dead-letter topic `topic` is (a catalog name)."""
    parts = topic.split(".")
    if len(parts) >= 2 and parts[0] == "notifications" and parts[1] not in RESERVED_CHANNELS:
        return parts[1]
    return None


def orphaned_channel_topics(existing: list[str] | tuple[str, ...] | set[str], catalog: Catalog,
                            namespace: str = "") -> dict[str, tuple[str, ...]]:
    """Topics (as on the broker) of channels the catalog no longer declares, by channel: what a
    renamed or removed channel leaves behind."""
    prefix = f"{namespace}." if namespace else ""
    found: dict[str, list[str]] = {}
    for topic in sorted(existing):
        if not topic.startswith(prefix):
            continue
        channel = channel_of_topic(topic.removeprefix(prefix))
        if channel is not None and channel not in catalog.channels:
            found.setdefault(channel, []).append(topic)
    return {channel: tuple(topics) for channel, topics in found.items()}


def event_topics(catalog: Catalog) -> tuple[str, ...]:
    """Each event kind's topic, in declaration order."""
    return tuple(catalog.topic_of(kind) for kind in catalog.events)


def retry_topic(topic: str, tier: int) -> str:
    """Tier `tier` (1-based) of the retry topics of a channel's request topic."""
    if not 1 <= tier <= RETRY_TIERS:
        raise ValueError(f"retry tier {tier} does not exist; tiers are 1..{RETRY_TIERS}")
    return f"{topic}.retry.{tier}"


def delivery_topics(channel: str) -> tuple[str, ...]:
    """The topics a channel's workers consume: the requests, then each retry tier."""
    topic = notification_topic(channel)
    return (topic, *(retry_topic(topic, tier) for tier in range(1, RETRY_TIERS + 1)))


def stats_key(window_start_iso: str, notification_type: str, channel: str, status: str) -> str:
    """The key of one per-minute count in notifications.status.stats."""
    return f"{window_start_iso}|{notification_type}|{channel}|{status}"


def missing_key(subject_id: str, notification_type: str) -> str:
    """The key of one expected notification in notifications.missing and the detector's state."""
    return f"{subject_id}|{notification_type}"


def dead_letter_topic(topic: str) -> str:
    """Where records that cannot be processed from `topic` go, with their reason in headers."""
    return f"{topic}.dlq"


def dead_letter_topics(catalog: Catalog) -> tuple[str, ...]:
    """Every dead-letter topic of the catalog (catalog names): what the DLQ index reads."""
    return tuple(spec.name for spec in topic_catalog(catalog) if spec.name.endswith(".dlq"))


DELIVERY_STAGE = "deliver"
CORRECTIONS_STAGE = "corrections"
DLQ_INDEX_STAGE = "dlq-index"
HISTORY_INDEX_STAGE = "history-index"


def consumer_group(stage: str, topic: str, namespace: str = "") -> str:
    """One consumer group per (stage, topic): scaling a stage adds members to its group."""
    return qualified(f"herald.{stage}.{topic}", namespace)


# Each stream processor is a Faust app of its own: its app id is its consumer group.
STREAM_PROCESSORS: tuple[str, ...] = ("router", "missing", "sessions", "status")


def stream_processor_group(app_id: str, processor: str, namespace: str = "") -> str:
    """The router keeps the plain app id (its consumer group); the others add their name."""
    if processor not in STREAM_PROCESSORS:
        raise ValueError(f"unknown stream processor {processor!r}; known: {', '.join(STREAM_PROCESSORS)}")
    return qualified(app_id if processor == "router" else f"{app_id}-{processor}", namespace)


def topic_catalog(catalog: Catalog, namespace: str = "") -> tuple[TopicSpec, ...]:
    """Every topic with its settings; provisioning creates exactly these."""
    specs = [*_event_topic_specs(catalog), *_own_topic_specs(_joined_partitions(catalog))]
    for channel, spec in catalog.channels.items():
        topic = notification_topic(channel)
        for name in delivery_topics(channel):
            specs.append(TopicSpec(name, spec.partitions, "delete", REQUEST_DAYS * _DAY_MS, "notification id",
                                   "herald.NotificationRequest"))
        specs.append(TopicSpec(dead_letter_topic(topic), 1, "delete", 30 * _DAY_MS,
                               "notification id", _ANY))
    return tuple(dataclasses.replace(s, name=qualified(s.name, namespace)) for s in specs)


_ANY = "any (undecodable input kept as it came)"


def _joined_partitions(catalog: Catalog) -> int:
    """The partitions of the topics joined with the event topics (all alike: the catalog checks)."""
    return next(iter(catalog.events.values())).partitions


def _event_topic_specs(catalog: Catalog) -> list[TopicSpec]:
    specs = []
    for kind, spec in catalog.events.items():
        topic, key = catalog.topic_of(kind), f"{kind} ({spec.key})"
        specs.append(TopicSpec(topic, spec.partitions, "delete", 7 * _DAY_MS, key,
                               full_name(catalog.event_schemas[kind])))
        specs.append(TopicSpec(dead_letter_topic(topic), 1, "delete", 30 * _DAY_MS, key, _ANY))
    return specs


def _own_topic_specs(joined_partitions: int) -> list[TopicSpec]:
    return [
        # Compacted: each record carries the whole session, so the latest per key is the state.
        TopicSpec(SESSION_EVENTS, 6, "compact", -1, "session id", "herald.SessionEvent"),
        TopicSpec(dead_letter_topic(SESSION_EVENTS), 1, "delete", 30 * _DAY_MS, "session id", _ANY),
        # Every outcome stays uncompacted as long as the requests are kept: the notification
        # history is rebuilt from both.
        TopicSpec(NOTIFICATION_STATUS, 6, "compact", -1, "notification id", "herald.NotificationStatus",
                  HISTORY_DAYS * _DAY_MS),
        TopicSpec(dead_letter_topic(NOTIFICATION_STATUS), 1, "delete", 30 * _DAY_MS, "notification id", _ANY),
        TopicSpec(MISSING_NOTIFICATIONS, 6, "compact", -1, "subject id|notification",
                  "herald.MissingNotification"),
        TopicSpec(MISSING_DELIVERIES, joined_partitions, "delete", _DAY_MS, "subject id",
                  "herald.NotificationStatus"),
        TopicSpec(MISSING_CHECKS, joined_partitions, "delete", _DAY_MS, "subject id",
                  "any: the key of the expectation to check, utf-8"),
        # A day is far more than the reconciler reads back on start (a few grace periods).
        TopicSpec(GATEWAY_OBSERVATIONS, 3, "delete", _DAY_MS, "gateway instance (base URL)",
                  "herald.GatewayObservation"),
        TopicSpec(dead_letter_topic(GATEWAY_OBSERVATIONS), 1, "delete", 30 * _DAY_MS, "gateway instance",
                  _ANY),
        TopicSpec(SESSION_MISMATCHES, 6, "compact", -1, "session id", "herald.SessionMismatch"),
        TopicSpec(dead_letter_topic(SESSION_MISMATCHES), 1, "delete", 30 * _DAY_MS, "session id", _ANY),
        TopicSpec(SESSION_CHECKS, 6, "delete", _DAY_MS, "session id",
                  "any: the session id to re-evaluate, utf-8"),
        TopicSpec(STATUS_STATS, 6, "compact", -1, "window start|type|channel|status",
                  "herald.NotificationStatusStats"),
        TopicSpec(STATUS_PARTIALS, 6, "delete", _DAY_MS, "window start|type|channel|status",
                  "any: JSON {partition, count}"),
        TopicSpec(SESSION_CORRECTIONS, 3, "delete", 7 * _DAY_MS, "session id", "herald.SessionEvent"),
        # One partition keeps the changes in order; a few records a day, so never deleted.
        TopicSpec(CHANNEL_CONTROL, 1, "delete", -1, "channel or channel/endpoint", "herald.ChannelControl"),
        TopicSpec(dead_letter_topic(SESSION_CORRECTIONS), 1, "delete", 30 * _DAY_MS, "session id", _ANY),
    ]
