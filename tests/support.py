"""Helpers for integration tests: read topics back, run simulators and herald processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from confluent_kafka import Consumer, Message, TopicPartition

from herald.infra.deadline import Deadline, wait_until
from herald.infra.processes import ProcessGroup, free_port
from herald.infra.provisioning import provision_topics
from herald.infra.schema_registry import register_and_connect
from herald.infra.settings import Settings, child_environ
from herald.ops.launch import HERALD_ARGV
from herald.proving.catalogs import provider_environ
from herald.proving.simulators.network import SimulatorNetwork
from herald.schemas.catalog import TopicSpec

HERALD = HERALD_ARGV
__all__ = ["HERALD", "process_env", "read_topic", "served_in_thread", "simulator_network", "wait_until"]


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


def provision(bootstrap: str, registry_url: str, specs: tuple[TopicSpec, ...]) -> None:
    """Topics and their schemas, as `herald up` provisions them, this process's codec on them."""
    provision_topics(bootstrap, specs)
    register_and_connect(registry_url, specs)


def process_env(settings: Settings, network: SimulatorNetwork | None = None) -> dict[str, str]:
    """The environment of a herald child process, pointed at `network`'s simulators (the
    variables the example catalogs read their providers' URLs from)."""
    environ = child_environ(settings, os.environ)
    if network is None:
        return environ
    return {**environ, **provider_environ(network.whatsapp, network.email)}


@contextmanager
def simulator_network(log_dir: Path, gateway_instances: int = 2, reporting_to: Settings | None = None,
                      report_interval_s: float = 0.5) -> Iterator[tuple[SimulatorNetwork, ProcessGroup]]:
    """Gateway instances and an email provider, each a process on a free loopback port; the
    group they run in, to kill and restart one. With `reporting_to`, the gateway instances
    report their sessions to that namespace's gateway.observations."""
    interval = report_interval_s if reporting_to is not None else 0.0
    network = SimulatorNetwork.plan(log_dir / "simulators", gateway_instances, interval)
    env = process_env(reporting_to) if reporting_to is not None else dict(os.environ)
    with ProcessGroup(log_dir, env) as group:
        network.start(group)
        yield network, group


@contextmanager
def served_in_thread(app: Any, log_level: str = "warning") -> Iterator[str]:
    """An ASGI app served by uvicorn on a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    serving = threading.Thread(target=server.run, name="served-in-thread")
    serving.start()
    wait_until(lambda: server.started, 30, "the app to be served")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        serving.join(30)
