"""Services in Docker containers, for machines where a Docker engine answers (not ours).

Kafka is the official apache/kafka image in KRaft mode. Its advertised address must be
the one the host reaches, so the container listens on the same port it is mapped to.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from herald.infra.deadline import Deadline
from herald.infra.processes import ServiceError, free_port
from herald.infra.services import check_kafka


def docker_engine_answers() -> bool:
    """True when a Docker engine answers `GET /_ping` at DOCKER_HOST (or the default socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        family, address = socket.AF_UNIX, host.removeprefix("unix://")
    elif host.startswith("tcp://"):
        name, _, port = host.removeprefix("tcp://").partition(":")
        family, address = socket.AF_INET, (name, int(port or 2375))
    else:
        return False
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def apache_kafka_env(port: int, controller_port: int = 9093) -> dict[str, str]:
    """Single-node KRaft configuration of the apache/kafka image, reachable at 127.0.0.1:`port`."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:{controller_port}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{controller_port}",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }


@contextmanager
def kafka_container(version: str) -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    port = free_port()
    container = DockerContainer(f"apache/kafka:{version}").with_bind_ports(port, port)
    for name, value in apache_kafka_env(port).items():
        container.with_env(name, value)
    with container:
        bootstrap = f"127.0.0.1:{port}"
        deadline = Deadline(90)
        while True:
            try:
                check_kafka(bootstrap, timeout_s=2)
                break
            except ServiceError:
                if deadline.expired():
                    raise
        yield bootstrap


@contextmanager
def postgres_container() -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="psycopg2") as container:
        yield container.get_connection_url()
