"""The stages a running pipeline is made of, as operators see them: what to start, and the
consumer groups each one must keep alive. Health checks them by name; one list, so a stage
added to the pipeline is checked from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.consumers.history_index import history_topics
from herald.infra.settings import Settings
from herald.schemas.catalog import (
    CORRECTIONS_STAGE,
    DELIVERY_STAGE,
    DLQ_INDEX_STAGE,
    GATEWAY_OBSERVATIONS,
    HISTORY_INDEX_STAGE,
    MISSING_CHECKS,
    MISSING_DELIVERIES,
    MISSING_NOTIFICATIONS,
    NOTIFICATION_STATUS,
    SESSION_CHECKS,
    SESSION_CORRECTIONS,
    SESSION_EVENTS,
    SESSION_MISMATCHES,
    STATUS_PARTIALS,
    STATUS_STATS,
    consumer_group,
    dead_letter_topic,
    dead_letter_topics,
    delivery_topics,
    event_topics,
    notification_topic,
    qualified,
    stream_processor_group,
)
from herald.schemas.catalog_model import Catalog

ALL_STAGES = "*"


def stream_inputs(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """What each stream processor's group reads (its Faust agents' inputs)."""
    events = event_topics(catalog)
    return {
        "router": events,
        "missing": (*events, NOTIFICATION_STATUS, MISSING_DELIVERIES, MISSING_CHECKS),
        "sessions": (SESSION_EVENTS, SESSION_CHECKS),
        "status": (NOTIFICATION_STATUS, STATUS_PARTIALS),
    }


def stream_outputs(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """What each stream processor writes."""
    requests = tuple(map(notification_topic, catalog.channels))
    return {
        "router": (*requests, *map(dead_letter_topic, event_topics(catalog))),
        "missing": (MISSING_NOTIFICATIONS, *requests, MISSING_DELIVERIES, MISSING_CHECKS),
        "sessions": (SESSION_MISMATCHES, SESSION_CHECKS, dead_letter_topic(SESSION_EVENTS),
                     dead_letter_topic(GATEWAY_OBSERVATIONS)),
        "status": (STATUS_STATS, STATUS_PARTIALS, dead_letter_topic(NOTIFICATION_STATUS)),
    }


@dataclass(frozen=True)
class GroupSpec:
    group: str  # as on the broker
    topics: tuple[str, ...]  # as on the broker


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. "router", "deliver:email"
    command: str  # how an operator starts it
    groups: tuple[GroupSpec, ...]  # each needs a live member; none for the relay (it leases shards)


def pipeline_stages(catalog: Catalog, namespace: str, streams_app_id: str) -> tuple[Stage, ...]:
    """Every stage of the pipeline the catalog calls for, in dataflow order. The gateway
    sessions' stages (sessions, corrections) only with a whatsapp-gateway channel."""
    gateway = bool(catalog.channels_of_kind("whatsapp-gateway"))
    def group(stage: str, topic: str, topics: tuple[str, ...] | None = None) -> GroupSpec:
        return GroupSpec(consumer_group(stage, topic, namespace),
                         tuple(qualified(t, namespace) for t in topics or (topic,)))

    stages = [Stage("relay", "herald relay", ())]
    for processor, inputs in stream_inputs(catalog).items():
        if processor == "sessions" and not gateway:
            continue
        spec = GroupSpec(stream_processor_group(streams_app_id, processor, namespace),
                         tuple(qualified(t, namespace) for t in inputs))
        stages.append(Stage(processor, f"herald streams --processor {processor}", (spec,)))
    for channel in catalog.channels:
        stages.append(Stage(f"deliver:{channel}", f"herald deliver --channel {channel}",
                            tuple(group(DELIVERY_STAGE, topic) for topic in delivery_topics(channel))))
    if gateway:
        stages.append(Stage("corrections", "herald corrections", tuple(
            group(CORRECTIONS_STAGE, topic) for topic in (SESSION_CORRECTIONS, SESSION_MISMATCHES))))
    dead_letters = group(DLQ_INDEX_STAGE, "dlq", dead_letter_topics(catalog))
    stages.append(Stage("dlq-index", "herald dlq index", (dead_letters,)))
    history = group(HISTORY_INDEX_STAGE, "history", history_topics(tuple(catalog.channels)))
    stages.append(Stage(HISTORY_INDEX_STAGE, "herald notifications index", (history,)))
    return tuple(stages)


def streams_app_id(settings: Settings, processor: str) -> str:
    """A stream processor's Faust app id, which is its consumer group."""
    return stream_processor_group(settings.streams_app_id, processor, settings.namespace)


def stage_groups(stages: tuple[Stage, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """Each group of `stages` with the topics it reads, as `group_views` takes them."""
    return [(spec.group, spec.topics) for stage in stages for spec in stage.groups]


def needed_stages(catalog: Catalog, namespace: str, streams_app_id: str,
                  names: tuple[str, ...]) -> tuple[Stage, ...]:
    """The stages `names` picks (ALL_STAGES for every one); ValueError naming an unknown one."""
    stages = pipeline_stages(catalog, namespace, streams_app_id)
    if ALL_STAGES in names:
        return stages
    known = {stage.name for stage in stages}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return tuple(stage for stage in stages if stage.name in names)
