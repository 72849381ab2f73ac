"""The router's transactional loop, broken on purpose: a kill -9 mid-batch (a new router taking
over, or the same one restarted), a rebalance between two routers mid-stream, the broker stopped
for 60 s. Each time every request is counted on the request topics, read_committed: none lost,
none twice."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.kafka_io import RDKAFKA_LOG, producer_config
from herald.infra.kafka_views import COORDINATOR_NOT_READY
from herald.infra.processes import ProcessGroup
from herald.infra.provisioning import provision_topics
from herald.ops.rejoin import MAX_REJOINS
from herald.schemas.catalog import notification_topic, qualified, stream_processor_group, topic_catalog
from herald.schemas.codec import decode, encode
from herald.schemas.records import SourceRecord
from herald.streams.router import Router
from tests.catalogs import example
from tests.support import HERALD, process_env, read_topic, wait_until
from tests.unit.test_router import event

CHANNELS = ("whatsapp", "email")


def produce_events(bootstrap: str, namespace: str, prefix: str, count: int,
                   per_second: float | None = None) -> Counter[str]:
    """`count` verified payments (paced, when `per_second` is given); returns the notification
    ids the pure router derives from them."""
    producer = Producer(producer_config(bootstrap, 60))
    router, expected, started = Router(example()), Counter[str](), time.monotonic()
    for n in range(count):
        if per_second is not None:
            time.sleep(max(0.0, started + n / per_second - time.monotonic()))
        key = f"{prefix}-{n:05d}".encode()
        record = {**event("payment_verified", key.decode()), "event_id": str(uuid.uuid4())}
        value = encode("herald.RegistrationEvent", record)
        producer.produce(qualified(REGISTRATION_EVENTS, namespace), value, key)
        producer.poll(0)
        source = SourceRecord(REGISTRATION_EVENTS, 0, n, key, value, {})
        expected.update(r.key.decode() for r in router.route(source))
    assert producer.flush(60) == 0
    return expected


def committed(bootstrap: str, namespace: str) -> int:
    """Inputs the router's group has committed, over all partitions.

    Asked through a consumer of the group (which never joins it), not the admin API: librdkafka
    2.16's ListConsumerGroupOffsets crashed this process (SIGSEGV in rd_kafka_cgrp_op, from
    rd_kafka_handle_OffsetFetch) when a just-started broker answered it."""
    group = stream_processor_group("herald-streams", "router", namespace)
    topic = qualified(REGISTRATION_EVENTS, namespace)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "logger": RDKAFKA_LOG,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    except KafkaException as exc:  # a broker just started: nothing committed is known yet
        if exc.args[0].code() not in COORDINATOR_NOT_READY:
            raise
        return 0
    finally:
        consumer.close()


def routed(bootstrap: str, namespace: str, expected: Counter[str]) -> Counter[str]:
    """Every request on the request topics, read_committed, by notification id."""
    seen = Counter[str]()
    for channel in CHANNELS:
        topic = qualified(notification_topic(channel), namespace)
        records = read_topic(bootstrap, topic, at_least=sum(expected.values()) // 2, timeout_s=90, idle_s=3)
        seen.update(decode(m.value()).record["notification_id"] for m in records)
    return seen


def start_router_under_way(group: ProcessGroup, name: str, bootstrap: str, namespace: str) -> None:
    """A router process, once its first batch is committed."""
    group.start(name, [*HERALD, "streams"])
    wait_until(lambda: committed(bootstrap, namespace) > 0, 60, "the first batch committed")


def test_a_router_killed_mid_batch_routes_every_request_exactly_once(settings, log_dir):
    bootstrap, ns = settings.kafka_bootstrap, settings.namespace
    expected = produce_events(bootstrap, ns, "KILL", 30_000)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_router_under_way(group, "router-1", bootstrap, ns)
        group.kill("router-1")  # batches take ~150 ms to route: almost surely mid-batch
        at_kill = committed(bootstrap, ns)
        assert 0 < at_kill < 30_000, "killed mid-stream"
        group.start("router-2", [*HERALD, "streams"])
        wait_until(lambda: committed(bootstrap, ns) >= 30_000, 90, "the rest routed by the second router")
    seen = routed(bootstrap, ns, expected)
    assert seen == expected, (sum(seen.values()), len(seen), sum(expected.values()))
    assert max(seen.values()) == 1


def test_a_router_restarted_under_its_name_takes_its_partitions_back_before_its_session_expires(
        settings, log_dir):
    """A static member (its instance id kept, as a supervisor keeps a process's name) is given
    its partitions again when it rejoins; its restarted self's producer aborts the dead one's
    open transaction. A new dynamic member would wait out the dead one's 60 s session."""
    bootstrap, ns = settings.kafka_bootstrap, settings.namespace
    settings = dataclasses.replace(settings, kafka_session_timeout_s=60.0)
    expected = produce_events(bootstrap, ns, "STATIC", 20_000)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_router_under_way(group, "router", bootstrap, ns)
        group.kill("router")
        assert committed(bootstrap, ns) < 20_000, "killed mid-stream"
        group.start("router", [*HERALD, "streams"])
        wait_until(lambda: committed(bootstrap, ns) >= 20_000, 30, "the rest routed, within half a session")
    seen = routed(bootstrap, ns, expected)
    assert seen == expected, (sum(seen.values()), len(seen), sum(expected.values()))
    assert max(seen.values()) == 1


def test_two_routers_under_one_name_fence_each_other_until_one_gives_up_routing_each_request_once(
        settings, log_dir):
    """A fenced router rejoins with a new consumer (ops.rejoin), which fences the other: each
    rejoins a few times, then one gives up and exits non-zero, saying why. Throughout, every
    request is routed once. (Two supervisors given one name: an operator's mistake, loud.)"""
    bootstrap, ns = settings.kafka_bootstrap, settings.namespace
    expected = produce_events(bootstrap, ns, "FENCE", 20_000)
    env = process_env(settings)
    with ProcessGroup(log_dir / "a", env) as first, ProcessGroup(log_dir / "b", env) as second:
        start_router_under_way(first, "router", bootstrap, ns)
        second.start("router", [*HERALD, "streams"])  # the same name, so the same instance id
        routers = (first.processes["router"], second.processes["router"])
        wait_until(lambda: any(r.poll() is not None for r in routers), 120, "one router to give up")
        expected += produce_events(bootstrap, ns, "AFTER", 2_000)
        wait_until(lambda: committed(bootstrap, ns) >= 22_000, 90, "the survivor to route the rest")
        quitter, survivor = (first, second) if routers[0].poll() is not None else (second, first)
        assert quitter.processes["router"].returncode != 0 and survivor.processes["router"].poll() is None
    quit_log = quitter.log_path("router").read_text()
    # Repeated warnings are folded by the log filter, so the starts are counted.
    assert quit_log.count("streams router starting") == MAX_REJOINS + 1, "rejoined, then gave up"
    assert "was fenced out of its group" in quit_log and "KafkaException" in quit_log
    seen = routed(bootstrap, ns, expected)
    assert seen == expected, (sum(seen.values()), len(seen), sum(expected.values()))


def test_a_rebalance_between_two_routers_mid_stream_routes_every_request_exactly_once(settings, log_dir):
    bootstrap, ns = settings.kafka_bootstrap, settings.namespace
    expected = produce_events(bootstrap, ns, "FIRST", 20_000)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_router_under_way(group, "router-1", bootstrap, ns)
        group.start("router-2", [*HERALD, "streams"])  # joins: partitions move mid-stream
        expected += produce_events(bootstrap, ns, "SECOND", 8_000, per_second=1_000)
        wait_until(lambda: committed(bootstrap, ns) >= 28_000, 90, "everything routed")
        group.check_alive()
    topic = qualified(REGISTRATION_EVENTS, ns)
    assert f"partitions assigned: {topic}[" in group.log_path("router-2").read_text(), "took some over"
    assert f"partitions revoked: {topic}[" in group.log_path("router-1").read_text(), "gave some up"
    assert "'consumed': 0," not in group.log_path("router-2").read_text(), "and routed some"
    seen = routed(bootstrap, ns, expected)
    assert seen == expected, (sum(seen.values()), len(seen), sum(expected.values()))


def test_the_router_resumes_after_the_broker_was_stopped_for_60_s(settings, log_dir, private_broker):
    bootstrap = private_broker.start().bootstrap
    ns = settings.namespace
    provision_topics(bootstrap, topic_catalog(example(), ns))
    settings = dataclasses.replace(settings, kafka_bootstrap=bootstrap)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        router = group.start("router", [*HERALD, "streams"])
        expected = produce_events(bootstrap, ns, "BEFORE", 2_000)
        wait_until(lambda: committed(bootstrap, ns) >= 2_000, 60, "the first events routed")
        private_broker.stop()
        time.sleep(60)
        group.check_alive()  # the outage did not take it down
        assert private_broker.start().bootstrap == bootstrap
        expected += produce_events(bootstrap, ns, "AFTER", 2_000)
        wait_until(lambda: committed(bootstrap, ns) >= 4_000, 60, "the events after the outage routed")
        group.check_alive()
        assert group.processes["router"].pid == router.pid, "the same process, not a restart"
    seen = routed(bootstrap, ns, expected)
    assert seen == expected, (sum(seen.values()), len(seen), sum(expected.values()))
