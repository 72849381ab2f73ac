"""The embedded Apache Kafka: official jars from Maven Central, one KRaft broker+controller.

Jars are resolved by `mvn` from `infra/kafka/pom.xml` into `<home>/m2`; storage, config,
log and state live in `<home>/kafka`. The broker listens on loopback only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from herald.infra.deadline import Deadline
from herald.infra.processes import (
    ServiceError,
    free_port,
    pid_alive,
    port_is_free,
    spawn_detached,
    tail,
    terminate,
)
from herald.infra.system_packages import ensure_command

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


@dataclass(frozen=True)
class KafkaState:
    pid: int
    bootstrap: str
    version: str


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 (one in 64 starts with "-")."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class EmbeddedKafka:
    def __init__(self, home: Path, version: str, heap_mb: int, m2: Path | None = None) -> None:
        self.dir = home / "kafka"
        self.m2 = m2 or home / "m2"  # a shared Maven cache avoids downloading the jars again
        self.version = version
        self.heap_mb = heap_mb
        self.state_file = self.dir / "state.json"
        self.log_file = self.dir / "broker.log"

    def state(self) -> KafkaState | None:
        """The running broker, or None. A stale state file (dead pid) counts as not running."""
        if not self.state_file.exists():
            return None
        state = KafkaState(**json.loads(self.state_file.read_text()))
        return state if pid_alive(state.pid) else None

    def start(self, timeout_s: float = 120.0) -> KafkaState:
        running = self.state()
        if running is not None:
            return running
        classpath = self.classpath()
        ports = self._ports()
        config = self._write_config(ports)
        self._format_storage(classpath, config)
        java = ensure_command("java", "openjdk-17-jre-headless")
        argv = [java, f"-Xms{min(256, self.heap_mb)}m", f"-Xmx{self.heap_mb}m",
                "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self._log_config()}",
                "-cp", classpath, MAIN_CLASS, str(config)]
        process = spawn_detached(argv, self.log_file)
        state = KafkaState(process.pid, f"127.0.0.1:{ports['broker']}", self.version)
        self._wait_until_ready(state, Deadline(timeout_s))
        self.state_file.write_text(json.dumps(state.__dict__))
        return state

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after the timeout)."""
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        terminate(state.pid, Deadline(timeout_s))
        return True

    def purge(self) -> None:
        """Remove the broker's data and state (stopped first); the jar cache stays."""
        self.stop()
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        (self.dir / "ports.json").unlink(missing_ok=True)

    def classpath(self) -> str:
        """The broker's classpath, resolving the pinned jars with mvn on first use."""
        cached = self.dir / f"classpath-{self.version}.txt"
        if cached.exists() and all(Path(p).exists() for p in cached.read_text().split(os.pathsep)):
            return cached.read_text().strip()
        mvn = ensure_command("mvn", "maven")
        self.dir.mkdir(parents=True, exist_ok=True)
        pom = resources.files("herald.infra") / "kafka" / "pom.xml"
        argv = [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
                f"-Dkafka.version={self.version}", f"-Dmdep.outputFile={cached}",
                f"-Dmaven.repo.local={self.m2}"]
        print(f"fetching Apache Kafka {self.version} jars from Maven Central...", file=sys.stderr)
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(
                f"mvn could not resolve Apache Kafka {self.version}:\n{result.stdout[-3000:]}")
        return cached.read_text().strip()

    def _ports(self) -> dict[str, int]:
        """Reuse the previous ports when free, so clients keep their address across restarts."""
        ports_file = self.dir / "ports.json"
        if ports_file.exists():
            ports = json.loads(ports_file.read_text())
            if all(port_is_free(p) for p in ports.values()):
                return ports
        ports = {"broker": free_port(), "controller": free_port()}
        self.dir.mkdir(parents=True, exist_ok=True)
        ports_file.write_text(json.dumps(ports))
        return ports

    def _write_config(self, ports: dict[str, int]) -> Path:
        broker, controller = ports["broker"], ports["controller"]
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # Static quorum: the voter's address lives in config, not storage, so ports may change.
            "controller.quorum.voters": f"1@127.0.0.1:{controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            # A killed delivery worker's open transaction blocks its partitions' next owner
            # until aborted; the broker looks for timed-out ones every 10 s by default.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",  # topics come from the catalog only
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return path

    def _format_storage(self, classpath: str, config: Path) -> None:
        if (self.dir / "data" / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        java = ensure_command("java", "openjdk-17-jre-headless")
        result = subprocess.run(
            [java, "-Xmx256m", f"-Dlog4j2.configurationFile={self._log_config()}", "-cp",
             # "=": a URL-safe base64 id may start with "-", which the tool would read as an option
             classpath, STORAGE_TOOL, "format", f"--cluster-id={cluster_id}", "-c", str(config)],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")

    def _log_config(self) -> Path:
        return Path(str(resources.files("herald.infra") / "kafka" / "log4j2.properties"))

    def _wait_until_ready(self, state: KafkaState, deadline: Deadline) -> None:
        admin = AdminClient({"bootstrap.servers": state.bootstrap, "log_level": 0})
        while not deadline.expired():
            if not pid_alive(state.pid):
                raise ServiceError(f"Kafka exited during start-up; {self.log_file}:\n"
                                   f"{tail(self.log_file)}")
            try:
                metadata = admin.list_topics(timeout=min(2.0, deadline.remaining() or 0.1))
                if metadata.brokers:
                    return
            except Exception:  # not answering yet
                time.sleep(0.5)
        terminate(state.pid, Deadline(10))
        raise ServiceError(f"Kafka did not answer metadata requests in time; {self.log_file}:\n"
                           f"{tail(self.log_file)}")
