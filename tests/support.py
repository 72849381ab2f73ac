"""Helpers for integration tests: read topics back, run simulators and herald processes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Message, TopicPartition

from herald.infra.deadline import Deadline, wait_until
from herald.infra.demo import HERALD_ARGV, start_simulators
from herald.infra.processes import ProcessGroup, free_port
from herald.infra.settings import Settings, child_environ

HERALD = HERALD_ARGV
__all__ = ["HERALD", "Simulator", "process_env", "read_topic", "simulators", "wait_until"]


def read_topic(bootstrap: str, topic: str, *, at_least: int = 0, timeout_s: float = 60,
               idle_s: float = 1.0) -> list[Message]:
    """Every record of `topic` from the beginning: waits for `at_least`, then until idle."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Message] = []
        deadline = Deadline(timeout_s)
        last_seen = time.monotonic()
        while not deadline.expired():
            batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            records += batch
            if batch:
                last_seen = time.monotonic()
            elif len(records) >= at_least and time.monotonic() - last_seen >= idle_s:
                break
        return records
    finally:
        consumer.close()


class Simulator:
    def __init__(self, url: str) -> None:
        self.url = url

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_sim/stats", timeout=10).json()

    def messages(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_sim/messages", timeout=10).json()

    def faults(self, **faults: Any) -> None:
        httpx.post(f"{self.url}/_sim/faults", json=faults, timeout=10).raise_for_status()


def process_env(settings: Settings, **simulators: Simulator) -> dict[str, str]:
    urls = {f"{channel}_url": simulator.url for channel, simulator in simulators.items()}
    return child_environ(settings, os.environ, **urls)


@contextmanager
def simulators(log_dir: Path, *kinds: str) -> Iterator[dict[str, Simulator]]:
    """Provider simulators as separate processes on free loopback ports."""
    urls = {kind: f"http://127.0.0.1:{free_port()}" for kind in kinds}
    with ProcessGroup(log_dir, dict(os.environ)) as group:
        start_simulators(group, urls)
        yield {kind: Simulator(url) for kind, url in urls.items()}
