"""Three embedded KRaft brokers from the same jars: the catalog provisioned with RF 3 and min
ISR 2, one broker killed with SIGKILL under load loses no acknowledged record, writes go on,
and `start` brings the dead node back into the cluster."""

from __future__ import annotations

import os
import signal
import threading

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.kafka_io import RDKAFKA_LOG, producer_config
from herald.infra.kafka_local import EmbeddedKafka
from herald.infra.provisioning import provision_topics
from herald.schemas.catalog import qualified, topic_catalog
from tests.catalogs import example
from tests.support import read_topic, wait_until


def test_three_brokers_lose_no_acknowledged_record_when_one_is_killed(base_settings, tmp_path):
    cluster = EmbeddedKafka(tmp_path, base_settings.kafka_version, 384, m2=base_settings.home / "m2", nodes=3)
    try:
        state = cluster.start(timeout_s=180)
        assert state.nodes == 3 and len(state.bootstrap.split(",")) == 3
        provision_topics(state.bootstrap, topic_catalog(example(), "c"), state.replication_factor)
        admin = AdminClient({"bootstrap.servers": state.bootstrap, "logger": RDKAFKA_LOG})
        topic = qualified(REGISTRATION_EVENTS, "c")

        def replicas() -> list[int]:  # per partition, once the metadata has reached every broker
            found = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
            return [len(p.replicas) for p in found]

        wait_until(lambda: len(replicas()) == 6, 30, "the topic's metadata")
        assert set(replicas()) == {3}, "every partition on all three brokers"

        def min_isr() -> str | None:  # the broker asked may not know the topic yet either
            (config,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
            try:
                return config.result(timeout=10)["min.insync.replicas"].value
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                return None

        wait_until(lambda: min_isr() is not None, 30, "the topic's configs")
        assert min_isr() == "2"

        acknowledged: list[bytes] = []
        failed: list[str] = []

        def on_delivery(error, message) -> None:
            (failed.append(error.str()) if error else acknowledged.append(message.value()))

        producer = Producer(producer_config(state.bootstrap, 60))
        killed = threading.Event()
        for n in range(3000):
            producer.produce(topic, f"event-{n}".encode(), f"REG-{n % 50}".encode(), on_delivery=on_delivery)
            producer.poll(0)
            if n == 1000:
                os.kill(state.pids[1], signal.SIGKILL)  # broker 2 dies with writes in flight
                killed.set()
        assert producer.flush(90) == 0
        assert killed.is_set() and not failed, failed[:3]
        stored = {m.value() for m in read_topic(state.bootstrap, topic, at_least=len(acknowledged),
                                                timeout_s=90)}
        assert len(acknowledged) == 3000
        assert not set(acknowledged) - stored, "an acknowledged record was lost"

        restarted = cluster.start(timeout_s=180)
        assert restarted.pids[0] == state.pids[0] and restarted.pids[1] != state.pids[1]
        wait_until(lambda: len(admin.list_topics(timeout=10).brokers) == 3, 60, "the node to rejoin")
    finally:
        cluster.stop()
