"""Create the catalog's topics with the admin client. Re-running it changes nothing, but for
a segment roll (`TopicSpec.segment_ms`) set on a topic made before its spec named one."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from herald.infra.deadline import wait_until
from herald.infra.kafka_io import RDKAFKA_LOG
from herald.schemas.catalog import TopicSpec


@dataclass(frozen=True)
class ProvisionReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]


def provision_topics(
    bootstrap: str, specs: tuple[TopicSpec, ...], replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> ProvisionReport:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, replication_factor, config=s.config()) for s in missing],
            operation_timeout=timeout_s, request_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                # Another provisioner won the race: the topic exists, which is what we want.
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                existing.add(name)
        _wait_until_listed(admin, {s.name: s.partitions for s in missing}, timeout_s)
    _roll_segments(admin, [s for s in specs if s.segment_ms and s.name in existing], timeout_s)
    return ProvisionReport(
        created=tuple(s.name for s in missing if s.name not in existing),
        existing=tuple(s.name for s in specs if s.name in existing),
    )


def _roll_segments(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> None:
    """Give existing topics the segment roll their specs name, where it differs: a changelog
    made before Herald rolled its segments was never compacted (streams.app)."""
    wanted = {s.name: str(s.segment_ms) for s in specs}
    stale = _stale_segment_rolls(admin, wanted, timeout_s)
    if not stale:
        return
    entries = {name: [ConfigEntry("segment.ms", wanted[name], incremental_operation=AlterConfigOpType.SET)]
               for name in stale}
    altered = admin.incremental_alter_configs(
        [ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries[name]) for name in stale],
        request_timeout=timeout_s)
    for future in altered.values():
        future.result()
    # The controller answers once the change is committed; the broker applies it a moment
    # later, and a describe in between (a fresh-clone run of the suite) still read the old roll.
    wait_until(lambda: not _stale_segment_rolls(admin, {n: wanted[n] for n in stale}, timeout_s), timeout_s,
               f"the new segment roll on {', '.join(sorted(stale))}", interval_s=0.05)


def _stale_segment_rolls(admin: AdminClient, wanted: dict[str, str], timeout_s: float) -> list[str]:
    """The topics whose `segment.ms` the broker describes differently from `wanted`."""
    if not wanted:
        return []
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in wanted],
                                       request_timeout=timeout_s)
    return [resource.name for resource, future in described.items()
            if future.result()["segment.ms"].value != wanted[resource.name]]


def _wait_until_listed(admin: AdminClient, partitions: dict[str, int], timeout_s: float) -> None:
    """Until the broker's metadata lists each new topic with all its partitions: the controller
    answers CreateTopics before the brokers' metadata caches have the topic. A Faust worker
    started in between found its table's new changelog topic missing, and the table's agent
    crashed for good (faust's PartitionsMismatch, in a fresh-clone run of the suite)."""
    def listed() -> bool:
        topics = admin.list_topics(timeout=timeout_s).topics
        return all(name in topics and len(topics[name].partitions) == count and topics[name].error is None
                   for name, count in partitions.items())

    wait_until(listed, timeout_s, f"the new topics in the broker's metadata: {', '.join(sorted(partitions))}",
               interval_s=0.05)


def topic_names(bootstrap: str, timeout_s: float = 30.0) -> set[str]:
    """Every topic on the broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
    return set(admin.list_topics(timeout=timeout_s).topics)


def delete_namespace_topics(bootstrap: str, namespace: str, timeout_s: float = 30.0) -> tuple[str, ...]:
    """Delete every topic whose name starts with `namespace`: a bench run's or a test's own.

    The prefix is literal, so one bench run's phases (`<run>`, `<run>w1`, `<run>fo`, ...) go
    together. Refuses an empty namespace, which would name every topic on the broker.
    """
    if not namespace:
        raise ValueError("refusing to delete the topics of the empty namespace (all of them)")
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})

    def remaining() -> tuple[str, ...]:
        return tuple(t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(namespace))

    ours = remaining()
    if ours:
        for future in admin.delete_topics(list(ours), operation_timeout=timeout_s).values():
            future.result()
        # Accepted is not yet gone: the metadata forgets them a moment later.
        wait_until(lambda: not remaining(), timeout_s, f"the topics of {namespace!r} to be deleted")
    return ours
