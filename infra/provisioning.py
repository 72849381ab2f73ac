"""Create the catalog's topics with the admin client. Re-running it changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from herald.schemas.catalog import TopicSpec


@dataclass(frozen=True)
class ProvisionReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]


def provision_topics(
    bootstrap: str, specs: tuple[TopicSpec, ...], replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> ProvisionReport:
    admin = AdminClient({"bootstrap.servers": bootstrap})
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
    return ProvisionReport(
        created=tuple(s.name for s in missing if s.name not in existing),
        existing=tuple(s.name for s in specs if s.name in existing),
    )
