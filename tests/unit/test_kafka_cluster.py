"""The embedded cluster's node configs: one quorum of every node, RF 3 and min ISR 2 on three."""

from __future__ import annotations

from pathlib import Path

from herald.infra.kafka_local import KafkaState, NodePorts, node_config

PORTS = [NodePorts(9101, 9201), NodePorts(9102, 9202), NodePorts(9103, 9203)]


def test_each_of_three_nodes_is_a_voter_of_one_quorum_with_replication_3_and_min_isr_2():
    configs = [node_config(n, PORTS, Path(f"/d/node-{n}/data")) for n in (1, 2, 3)]
    assert {c["controller.quorum.voters"] for c in configs} == {
        "1@127.0.0.1:9201,2@127.0.0.1:9202,3@127.0.0.1:9203"}
    assert [c["node.id"] for c in configs] == ["1", "2", "3"]
    assert configs[1]["listeners"] == "PLAINTEXT://127.0.0.1:9102,CONTROLLER://127.0.0.1:9202"
    for config in configs:
        assert (config["default.replication.factor"], config["min.insync.replicas"]) == ("3", "2")
        assert config["offsets.topic.replication.factor"] == "3"
        assert config["transaction.state.log.min.isr"] == "2"


def test_one_node_keeps_replication_1():
    config = node_config(1, PORTS[:1], Path("/d/data"))
    assert (config["default.replication.factor"], config["min.insync.replicas"]) == ("1", "1")
    assert config["controller.quorum.voters"] == "1@127.0.0.1:9201"


def test_a_state_knows_its_nodes_and_the_replicas_its_topics_get():
    assert KafkaState(1, "b", "v").replication_factor == 1, "a one-node state written before clusters"
    assert KafkaState(1, "b", "v", (1, 2, 3)).replication_factor == 3
