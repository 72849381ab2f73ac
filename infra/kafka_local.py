"""The embedded Apache Kafka: official jars from Maven Central, KRaft nodes that are each
broker and controller: one by default, or three (`herald up --brokers 3`) forming one
cluster with a three-voter quorum, replication factor 3 and min.insync.replicas 2.

Jars are resolved by `mvn` from `infra/kafka/pom.xml` into `<home>/m2`; storage, config,
log and state live in `<home>/kafka` (a cluster's nodes in `node-1`..`node-3` there). The
brokers listen on loopback only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from herald.infra.deadline import Deadline
from herald.infra.kafka_hanging import abort_hanging_transactions
from herald.infra.processes import (
    ServiceError,
    free_port,
    pid_alive,
    port_is_free,
    spawn_detached,
    tail,
    terminate,
)
from herald.infra.system_packages import QUICK_JIT, require_command

MAIN_CLASS = "kafka.Kafka"
# The parallel collector, not G1 (the JVM's choice on two cores). The broker keeps ~180 MB live
# from its start (the log cleaner's dedupe buffer alone is 128 MB by default), near G1's 45 %
# threshold in a 512 MB heap: in a paced demo G1 ran concurrent mark cycles and mixed
# collections beside its young pauses, taking a core from stages that had none to spare.
# `herald demo --rate 100 --no-faults`, arms interleaved in one session: G1 met the paced goal
# in 6 of 16 runs (median p50 45.3 ms), the parallel collector in 7 of 8 (32.0 ms).
BROKER_GC = "-XX:+UseParallelGC"
STORAGE_TOOL = "kafka.tools.StorageTool"


@dataclass(frozen=True)
class KafkaState:
    pid: int  # the first node's
    bootstrap: str  # every broker, comma-separated
    version: str
    pids: tuple[int, ...] = ()  # every node's, in node order

    @property
    def nodes(self) -> int:
        return len(self.pids) or 1

    @property
    def replication_factor(self) -> int:
        """What the catalog's topics get on this cluster: 1 on one broker, 3 on three or more."""
        return min(3, self.nodes)


@dataclass(frozen=True)
class NodePorts:
    broker: int
    controller: int


def node_config(node_id: int, ports: list[NodePorts], data_dir: Path) -> dict[str, str]:
    """server.properties of node `node_id` (1-based) of a cluster of len(ports) nodes."""
    own = ports[node_id - 1]
    replicas = min(3, len(ports))
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        # Static quorum: the voters' addresses live in config, not storage, so ports may change.
        "controller.quorum.voters": ",".join(f"{n}@127.0.0.1:{p.controller}"
                                             for n, p in enumerate(ports, start=1)),
        "listeners": f"PLAINTEXT://127.0.0.1:{own.broker},CONTROLLER://127.0.0.1:{own.controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{own.broker}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # acks=all then means every in-sync replica, and at least two of three must be: one
        # broker may die without losing an acknowledged record or refusing writes.
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min(2, replicas)),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min(2, replicas)),
        "transaction.state.log.num.partitions": "10",
        # A killed delivery worker's open transaction blocks its partitions' next owner
        # until aborted; the broker looks for timed-out ones every 10 s by default.
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        "group.initial.rebalance.delay.ms": "0",
        # A broker killed without a goodbye is fenced (its partitions led elsewhere) after this
        # silence; Kafka's 9 s default alone would spend most of a 10 s recovery goal.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "auto.create.topics.enable": "false",  # topics come from the catalog only
        "num.network.threads": "2",
        "num.io.threads": "4",
    }


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 (one in 64 starts with "-")."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class EmbeddedKafka:
    def __init__(self, home: Path, version: str, heap_mb: int, m2: Path | None = None,
                 nodes: int = 1) -> None:
        if nodes < 1:
            raise ValueError(f"an embedded Kafka needs at least one node, not {nodes}")
        self.dir = home / "kafka"
        self.m2 = m2 or home / "m2"  # a shared Maven cache avoids downloading the jars again
        self.version = version
        self.heap_mb = heap_mb
        self.nodes = nodes
        self.state_file = self.dir / "state.json"
        self.log_file = self.node_dir(1) / "broker.log"

    def node_dir(self, node_id: int) -> Path:
        """Where node `node_id` keeps data, config and log (one node: the top, as it always was)."""
        return self.dir if self.nodes == 1 else self.dir / f"node-{node_id}"

    def _recorded(self) -> KafkaState | None:
        if not self.state_file.exists():
            return None
        data = json.loads(self.state_file.read_text())
        return KafkaState(**{**data, "pids": tuple(data.get("pids") or (data["pid"],))})

    def state(self) -> KafkaState | None:
        """The running cluster, or None. A stale state file (no node alive) counts as not running."""
        state = self._recorded()
        return state if state is not None and any(pid_alive(p) for p in state.pids) else None

    def start(self, timeout_s: float = 120.0) -> KafkaState:
        """Start every node that is not running (all of them, or those that died), then wait
        until each answers as a broker of the cluster."""
        running = self.state()
        if running is not None and running.nodes != self.nodes:
            raise ServiceError(f"an embedded Kafka of {running.nodes} broker(s) is running; stop it "
                               f"(herald down) before starting one of {self.nodes}")
        if running is not None and all(pid_alive(p) for p in running.pids):
            return running
        classpath = self.classpath()
        ports = self._ports(keep=running is not None)
        configs = [self._write_config(n, ports) for n in range(1, self.nodes + 1)]
        had_data = self._formatted_nodes()
        self._format_storage(classpath, [c for n, c in enumerate(configs, start=1) if n not in had_data])
        previous = running.pids if running else [0] * self.nodes
        restarted = [n for n, p in enumerate(previous, start=1) if not pid_alive(p) and n in had_data]
        pids = [p if running is not None and pid_alive(p) else self._spawn(classpath, n, configs[n - 1])
                for n, p in enumerate(previous, start=1)]
        bootstrap = ",".join(f"127.0.0.1:{p.broker}" for p in ports)
        state = KafkaState(pids[0], bootstrap, self.version, tuple(pids))
        self.state_file.write_text(json.dumps({**state.__dict__, "pids": list(pids)}))
        self._wait_until_ready(state, Deadline(timeout_s))
        abort_hanging_transactions(require_command("java"), classpath, bootstrap, restarted)
        return state

    def _spawn(self, classpath: str, node_id: int, config: Path) -> int:
        java = require_command("java")
        argv = [java, f"-Xms{min(256, self.heap_mb)}m", f"-Xmx{self.heap_mb}m",
                BROKER_GC, "-Djava.awt.headless=true", *QUICK_JIT,
                f"-Dlog4j2.configurationFile={self._log_config()}",
                "-cp", classpath, MAIN_CLASS, str(config)]
        return spawn_detached(argv, self.node_dir(node_id) / "broker.log")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every node cleanly (SIGTERM, then SIGKILL after the timeout)."""
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        deadline = Deadline(timeout_s)
        for pid in state.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        for pid in state.pids:
            terminate(pid, deadline)
        return True

    def purge(self) -> None:
        """Remove the cluster's data and state (stopped first); the jar cache stays."""
        self.stop()
        for data in [self.dir / "data", *self.dir.glob("node-*/data")]:  # one node's, and a cluster's
            shutil.rmtree(data, ignore_errors=True)
        (self.dir / "ports.json").unlink(missing_ok=True)

    def classpath(self) -> str:
        """The broker's classpath, resolving the pinned jars with mvn on first use."""
        cached = self.dir / f"classpath-{self.version}.txt"
        if cached.exists() and all(Path(p).exists() for p in cached.read_text().split(os.pathsep)):
            return cached.read_text().strip()
        mvn = require_command("mvn")
        self.dir.mkdir(parents=True, exist_ok=True)
        pom = resources.files("herald.infra") / "kafka" / "pom.xml"
        argv = [mvn, "-q", "-B", "-f", str(pom), "dependency:build-classpath",
                f"-Dkafka.version={self.version}", f"-Dmdep.outputFile={cached}",
                f"-Dmaven.repo.local={self.m2}"]
        print(f"resolving Apache Kafka {self.version} jars (from Maven Central, unless already in "
              f"{self.m2})...", file=sys.stderr)
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(
                f"mvn could not resolve Apache Kafka {self.version}:\n{result.stdout[-3000:]}")
        return cached.read_text().strip()

    def _ports(self, keep: bool) -> list[NodePorts]:
        """The previous ports when `keep` (some nodes still run) or when all are free, so
        clients keep their address across restarts; else new ones."""
        ports_file = self.dir / "ports.json"
        if ports_file.exists():
            saved = json.loads(ports_file.read_text())
            nodes = saved.get("nodes", [saved])  # one node's file, as it was written before clusters
            ports = [NodePorts(n["broker"], n["controller"]) for n in nodes]
            free = all(port_is_free(p.broker) and port_is_free(p.controller) for p in ports)
            if len(ports) == self.nodes and (keep or free):
                return ports
        ports = [NodePorts(free_port(), free_port()) for _ in range(self.nodes)]
        self.dir.mkdir(parents=True, exist_ok=True)
        ports_file.write_text(json.dumps({"nodes": [p.__dict__ for p in ports]}))
        return ports

    def _write_config(self, node_id: int, ports: list[NodePorts]) -> Path:
        node = self.node_dir(node_id)
        node.mkdir(parents=True, exist_ok=True)
        path = node / "server.properties"
        settings = node_config(node_id, ports, node / "data")
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return path

    def _meta(self, node_id: int) -> Path:
        """A node's storage metadata: there once its storage is formatted."""
        return self.node_dir(node_id) / "data" / "meta.properties"

    def _formatted_nodes(self) -> set[int]:
        """The nodes with storage already: a start of one of them is a restart."""
        return {n for n in range(1, self.nodes + 1) if self._meta(n).exists()}

    def _format_storage(self, classpath: str, unformatted: list[Path]) -> None:
        """Format these nodes' storage (their configs), all with one cluster id."""
        if not unformatted:
            return
        cluster_id = self._cluster_id()
        java = require_command("java")
        for config in unformatted:
            result = subprocess.run(
                [java, "-Xmx256m", f"-Dlog4j2.configurationFile={self._log_config()}", "-cp",
                 # "=": a URL-safe base64 id may start with "-", which the tool would read as an option
                 classpath, STORAGE_TOOL, "format", f"--cluster-id={cluster_id}", "-c", str(config)],
                capture_output=True, text=True)
            if result.returncode != 0:
                raise ServiceError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")

    def _cluster_id(self) -> str:
        """The id a formatted node already has (a node whose data was lost rejoins its cluster),
        else a new one."""
        for node_id in range(1, self.nodes + 1):
            meta = self._meta(node_id)
            if meta.exists():
                for line in meta.read_text().splitlines():
                    if line.startswith("cluster.id="):
                        return line.split("=", 1)[1]
        return new_cluster_id()

    def _log_config(self) -> Path:
        return Path(str(resources.files("herald.infra") / "kafka" / "log4j2.properties"))

    def _wait_until_ready(self, state: KafkaState, deadline: Deadline) -> None:
        """Until the metadata names every node as a broker."""
        admin = AdminClient({"bootstrap.servers": state.bootstrap, "log_level": 0})
        while not deadline.expired():
            for node_id, pid in enumerate(state.pids, start=1):
                if not pid_alive(pid):
                    log = self.node_dir(node_id) / "broker.log"
                    raise ServiceError(f"Kafka node {node_id} exited during start-up; {log}:\n{tail(log)}")
            try:
                metadata = admin.list_topics(timeout=min(2.0, deadline.remaining() or 0.1))
                if len(metadata.brokers) >= state.nodes:
                    return
            except Exception:  # not answering yet
                pass
            time.sleep(0.5)
        for pid in state.pids:
            terminate(pid, Deadline(10))
        raise ServiceError(f"Kafka did not answer metadata requests in time; {self.log_file}:\n"
                           f"{tail(self.log_file)}")
