"""The status stream for analysts: per-minute counts by type, channel and status, exact across a
kill -9 of the Faust worker mid-stream (nothing counted twice, nothing forgotten), with a
poison record dead-lettered on the way; aborted transactions and repeated outcomes are not
counted, and the counter's group ends at lag 0 on the transactional topic."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import producer_config
from herald.infra.kafka_views import group_views
from herald.infra.processes import ProcessGroup
from herald.ops.pipeline import stream_inputs, streams_app_id
from herald.proving.demo import wait_for_groups
from herald.schemas.catalog import NOTIFICATION_STATUS, STATUS_STATS, dead_letter_topic, qualified
from herald.schemas.codec import decode, encode, load_schema_json, schema_versions
from herald.streams.status_stats import Bucket
from tests.catalogs import example
from tests.doc_blocks import ROOT, blocks
from tests.support import HERALD, process_env, read_topic, wait_until

TYPES = ("welcome", "upload_confirmation", "e_ticket")
CHANNELS = ("whatsapp", "email")
STATES = ("sent", "retry_scheduled", "dead_lettered")


def outcomes(count: int, start: datetime) -> list[dict]:
    """`count` outcomes spread over three minutes, every type, channel and status."""
    records = []
    for n in range(count):
        at = start + timedelta(milliseconds=n * 180_000 // count)
        records.append({
            "notification_id": str(uuid.uuid4()), "subject_id": f"REG-{n}",
            "notification_type": TYPES[n % 3], "channel": CHANNELS[n % 2], "status": STATES[n % 5 % 3],
            "attempts": 1, "provider_message_id": None, "error": None, "error_class": None, "due_at": None,
            "gateway_instance": None, "source_occurred_at": at, "occurred_at": at})
    return records


def produce(producer: Producer, topic: str, records: list[dict]) -> None:
    for record in records:
        value = encode("herald.NotificationStatus", record)
        producer.produce(topic, value, record["notification_id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def produce_in_transaction(producer: Producer, topic: str, records: list[dict], commit: bool = True) -> None:
    """As a delivery worker writes outcomes: in one transaction, committed or aborted."""
    producer.begin_transaction()
    produce(producer, topic, records)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def latest_counts(settings) -> dict[str, int]:
    records = read_topic(settings.kafka_bootstrap, qualified(STATUS_STATS, settings.namespace), idle_s=0.5)
    return {m.key().decode(): decode(m.value()).record["count"] for m in records}


def start_counter(group: ProcessGroup, settings) -> None:
    group.start("status", [*HERALD, "streams", "--processor", "status"])
    wait_for_groups(settings.kafka_bootstrap, [streams_app_id(settings, "status")], Deadline(90), group,
                    members=1)


def test_per_minute_counts_are_exact_across_a_kill_9_mid_stream(settings, log_dir):
    settings = dataclasses.replace(settings, status_stats_flush_interval_s=0.3)
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    topic = qualified(NOTIFICATION_STATUS, settings.namespace)
    records = outcomes(6000, datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5))
    expected = Counter(Bucket.of(r).key for r in records)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_counter(group, settings)
        producer.produce(topic, b"\x00\x00\x00\x00\x05not avro", b"poison")  # among the outcomes
        produce(producer, topic, records[:4000])
        wait_until(lambda: sum(latest_counts(settings).values()) >= 500, 60, "counts under way")
        victim = group.processes["status"]
        os.kill(victim.pid, signal.SIGKILL)  # mid-stream: some counted outcomes not yet committed
        victim.wait()
        start_counter(group, settings)
        produce(producer, topic, records[4000:])
        wait_until(lambda: sum(latest_counts(settings).values()) >= len(records), 90, "every outcome counted")
        group.check_alive()
    counts = latest_counts(settings)
    assert counts == dict(expected), "each bucket's count exact: nothing doubled, nothing lost"
    assert len({key.split("|")[0] for key in counts}) >= 3, "three minutes of outcomes, one count each"
    dead_letters = qualified(dead_letter_topic(NOTIFICATION_STATUS), settings.namespace)
    dead = [(m.key(), dict(m.headers())["error-class"])
            for m in read_topic(settings.kafka_bootstrap, dead_letters)]
    assert dead == [(b"poison", b"UndecodableRecord")]


def test_aborted_and_repeated_outcomes_are_not_counted_and_the_group_ends_at_lag_0(settings, log_dir):
    """What a router re-routing after a restart (the same notification sent again, 13 s later)
    and delivery transactions aborted after their records were written put on the topic."""
    settings = dataclasses.replace(settings, status_stats_flush_interval_s=0.3)
    topic = qualified(NOTIFICATION_STATUS, settings.namespace)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    first, later, aborted = outcomes(600, start), outcomes(60, start), outcomes(90, start)
    repeats = [{**r, "occurred_at": r["occurred_at"] + timedelta(seconds=13)} for r in first[::10]]
    producer = Producer(producer_config(settings.kafka_bootstrap, 30,
                                        **{"transactional.id": f"{settings.namespace}-outcomes"}))
    producer.init_transactions(30)
    group_id = streams_app_id(settings, "status")

    inputs = [qualified(topic, settings.namespace) for topic in stream_inputs(example())["status"]]

    def settled(total: int) -> bool:  # every record read and committed, markers included
        (view,) = group_views(settings.kafka_bootstrap, [(group_id, inputs)]).values()
        return view.lag == 0 and sum(latest_counts(settings).values()) >= total

    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_counter(group, settings)
        produce_in_transaction(producer, topic, first[:300])
        produce_in_transaction(producer, topic, aborted, commit=False)
        produce_in_transaction(producer, topic, [*first[300:], *repeats[:30]])
        wait_until(lambda: settled(len(first)), 90, "the counter caught up, at lag 0")
        victim = group.processes["status"]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        start_counter(group, settings)  # the seen outcomes come back from their changelog
        produce_in_transaction(producer, topic, [*repeats[30:], *later])
        wait_until(lambda: settled(len(first) + len(later)), 90, "the restarted counter caught up, at lag 0")
        group.check_alive()
    assert latest_counts(settings) == dict(Counter(Bucket.of(r).key for r in [*first, *later])), \
        "each notification's outcome counted once: no aborted record, no repeat"


def test_the_counter_keeps_up_with_outcomes_written_in_many_small_transactions(settings, log_dir):
    """Delivery workers write a few outcomes per transaction, so a commit marker follows every
    few records. Faust's own gap bookkeeping fell behind for good on such a topic (the demo's
    counter had committed a third of it); the counter must reach lag 0 with exact counts."""
    settings = dataclasses.replace(settings, status_stats_flush_interval_s=0.3)
    topic = qualified(NOTIFICATION_STATUS, settings.namespace)
    records = outcomes(4000, datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5))
    producer = Producer(producer_config(settings.kafka_bootstrap, 30,
                                        **{"transactional.id": f"{settings.namespace}-small"}))
    producer.init_transactions(30)
    group_id = streams_app_id(settings, "status")
    inputs = [qualified(topic, settings.namespace) for topic in stream_inputs(example())["status"]]
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_counter(group, settings)
        for at in range(0, len(records), 5):
            produce_in_transaction(producer, topic, records[at:at + 5])
        wait_until(lambda: group_views(settings.kafka_bootstrap, [(group_id, inputs)])[group_id].lag == 0,
                   90, "the counter's group at lag 0")
        wait_until(lambda: sum(latest_counts(settings).values()) >= len(records), 30, "every outcome counted")
        group.check_alive()
    assert latest_counts(settings) == dict(Counter(Bucket.of(r).key for r in records))


def test_the_documented_example_consumer_prints_the_counts(settings, log_dir):
    """The analysts' example (docs/analysts.md), run as written, against this test's counts."""
    (example,) = blocks("docs/analysts.md", "# For analysts", "python")
    settings = dataclasses.replace(settings, status_stats_flush_interval_s=0.3)
    records = outcomes(300, datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=4))
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    with ProcessGroup(log_dir, process_env(settings)) as group:
        start_counter(group, settings)
        produce(producer, qualified(NOTIFICATION_STATUS, settings.namespace), records)
        wait_until(lambda: sum(latest_counts(settings).values()) >= len(records), 60, "every outcome counted")
    env = {**os.environ, "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "SCHEMA_REGISTRY_URL": settings.schema_registry_url,
           "STATS_TOPIC": qualified(STATUS_STATS, settings.namespace)}
    printed = run_with_stack_on_hang(example, env, hang_s=90)
    rows = Counter()
    for line in printed.splitlines():
        start, notification_type, channel, status, count = line.split()
        rows[f"{datetime.fromisoformat(start).isoformat(timespec='milliseconds')}|{notification_type}|"
             f"{channel}|{status}"] = int(count)
    assert rows == Counter(Bucket.of(r).key for r in records)


def run_with_stack_on_hang(code: str, env: dict[str, str], hang_s: float) -> str:
    """Run `code` in a fresh interpreter; if it hangs, fail with where it hangs (faulthandler
    prints every thread's stack on SIGABRT), not with a bare timeout."""
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", code], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed, errors = process.communicate(timeout=hang_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        _printed, errors = process.communicate(timeout=30)
        raise AssertionError(f"the example hung for {hang_s:.0f} s; its stacks:\n{errors}") from None
    assert process.returncode == 0, errors
    return printed


def test_the_documented_registry_calls_list_the_subjects_and_give_the_schemas(settings):
    """docs/analysts.md's REST calls, run as written in a shell, against this suite's registry."""
    (calls,) = blocks("docs/analysts.md", "# For analysts", "sh")
    stats_subject = f"{qualified(STATUS_STATS, settings.namespace)}-value"
    calls = calls.replace("/subjects/notifications.status.stats-value", f"/subjects/{stats_subject}")
    env = {**os.environ, "HERALD_SCHEMA_REGISTRY_URL": settings.schema_registry_url}
    printed = subprocess.run(["bash", "-c", f"set -e\n{calls}"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120, check=True).stdout.splitlines()
    subjects, versions, latest, by_id = (json.loads(line) for line in printed)
    # A long-used registry lists a page of its subjects (Apicurio: the first 1,000).
    assert subjects and all(isinstance(s, str) and s.endswith("-value") for s in subjects), subjects
    assert versions == list(range(1, len(schema_versions("herald.NotificationStatusStats")) + 1)), (
        "each earlier version, then the current one")
    assert json.loads(latest["schema"]) == load_schema_json("notification_status_stats.avsc")
    assert "schema" in by_id and json.loads(by_id["schema"])["type"] == "record"
