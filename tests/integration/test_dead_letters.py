"""The DLQ index and replay: every dead letter indexed once, replay interrupted by kill -9 and
re-run replays each row once, two replays at once take each row once, discard produces nothing.

Counted on the topics the replays reach, through the real relay and broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from sqlalchemy.orm import Session

from herald.consumers.dead_letter_index import DeadLetterIndexer
from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.kafka_io import consumer_config, producer_config
from herald.ops.bootstrap import run_dlq_index
from herald.ops.dead_letter_ops import (
    DeadLetterFilter,
    DeadLetterOpsError,
    discard,
    list_dead_letters,
    replay,
)
from herald.schemas import headers as h
from herald.schemas.catalog import dead_letter_topics, notification_topic, qualified, retry_topic
from herald.schemas.codec import encode
from herald.schemas.ids import notification_id
from herald.schemas.records import Failure, SourceRecord, dead_letter, retry_record
from herald.schemas.tables import DeadLetter, DeadLetterAction, OutboxRecord
from tests.catalogs import example
from tests.integration.delivery_support import (
    delivering,
    fast_settings,
    latest_statuses,
    produce_requests,
    request_record,
)
from tests.integration.relay_support import running_relay
from tests.support import HERALD, process_env, read_topic, simulator_network, wait_until

WHATSAPP = notification_topic("whatsapp")


def failed_request(n: int, *, retried: bool = False) -> SourceRecord:
    """A WhatsApp request as a worker read it; `retried`: read from retry tier 2 after 3 attempts."""
    request = request_record(n, "whatsapp")
    event_id = f"00000000-0000-4000-8000-{n:012d}"
    headers = {**h.event_headers(event_id=event_id, event_type="notification.requested"),
               "x-upstream": "kept"}
    source = SourceRecord(WHATSAPP, n % 6, 100 + n, request["notification_id"].encode(),
                          encode("herald.NotificationRequest", request), headers, 1_700_000_000_000)
    if not retried:
        return source
    failure = Failure("ProviderUnavailable", "HTTP 503", 3, datetime.now(UTC))
    tier = retry_record(source, retry_topic(WHATSAPP, 2), failure, datetime.now(UTC), 1.0)
    return SourceRecord(tier.topic, 0, n, tier.key, tier.value, tier.headers)


def put_dead_letters(settings, sources: list[SourceRecord], error_class: str = "ProviderRejected") -> None:
    producer = Producer(producer_config(settings.kafka_bootstrap, 30))
    for source in sources:
        record = dead_letter(source, error_class, f"HTTP 400: bad recipient +62812{source.offset:07d}",
                             consumer_group="g", attempts=3)
        producer.produce(qualified(record.topic, settings.namespace), record.value, record.key,
                         headers=record.headers)
    assert producer.flush(30) == 0


def index(settings) -> object:
    return run_dlq_index(settings, example(), threading.Event(), drain=True)


def replayed_records(settings, topic: str, at_least: int):
    return read_topic(settings.kafka_bootstrap, qualified(topic, settings.namespace), at_least=at_least)


def test_every_dead_letter_is_indexed_once_with_why_it_failed(settings, engine):
    put_dead_letters(settings, [failed_request(n) for n in range(20)])
    put_dead_letters(settings, [failed_request(20, retried=True)], error_class="RetriesExhausted")
    poison = SourceRecord(REGISTRATION_EVENTS, 2, 7, b"REG-9", b"\x00garbage", {"x": "y"}, 1)
    put_dead_letters(settings, [poison], error_class="UndecodableRecord")
    first = index(settings)
    again = index(settings)
    assert (first.indexed, first.already_indexed) == (22, 0)
    assert (again.indexed, again.already_indexed) == (0, 0), "the group resumed from its commit"
    with Session(engine) as session:
        rows = {row.key_text: row for row in session.scalars(sa.select(DeadLetter))}
    assert len(rows) == 22
    exhausted = rows[request_record(20, "whatsapp")["notification_id"]]
    assert exhausted.original_topic == WHATSAPP and exhausted.dlq_topic == f"{WHATSAPP}.dlq"
    assert (exhausted.error_class, exhausted.attempts, exhausted.state) == ("RetriesExhausted", 3, "open")
    assert exhausted.original_offset == 120 and exhausted.first_failed_at is not None
    assert exhausted.schema_name == "herald.NotificationRequest"
    assert exhausted.payload_json["recipient"] == "+628120000020"
    assert exhausted.headers["x-upstream"] == "kept" and exhausted.trace_id
    bad = rows["REG-9"]
    assert (bad.original_topic, bad.schema_name, bad.payload_json) == (REGISTRATION_EVENTS, None, None)
    assert bad.payload == b"\x00garbage" and bad.error_class == "UndecodableRecord"


def test_reindexing_from_the_start_changes_nothing(settings, engine):
    put_dead_letters(settings, [failed_request(n) for n in range(5)])
    index(settings)
    # As after a crash between the database commit and the offset commit: all read again.
    consumer = Consumer(consumer_config(settings.kafka_bootstrap, f"{settings.namespace}.fresh-group"))
    indexer = DeadLetterIndexer(consumer, engine, settings.namespace, dead_letter_topics(example()))
    stats = indexer.run(threading.Event(), drain=True)
    assert (stats.indexed, stats.already_indexed) == (0, 5), "a crash before the commit indexes nothing twice"


def test_replay_killed_halfway_and_rerun_replays_each_dead_letter_once(settings, engine):
    put_dead_letters(settings, [failed_request(n, retried=n % 2 == 0) for n in range(300)])
    index(settings)
    with Session(engine) as session:
        ids = sorted(session.scalars(sa.select(DeadLetter.id)))
    env = process_env(settings)
    blocker = engine.connect()  # holds the 151st row: the replay stops there, mid-run
    blocker.execute(sa.text("SELECT 1 FROM dead_letters WHERE id = :id FOR UPDATE"), {"id": ids[150]})
    first = subprocess.Popen([*HERALD, "dlq", "replay", "--all", "--batch-size", "25", "--actor", "first"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: replayed_so_far(engine) == 150, 60, "six batches committed before the held row")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        blocker.rollback()
        blocker.close()
    second = subprocess.run([*HERALD, "dlq", "replay", "--all", "--actor", "second"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    with running_relay(settings):
        wait_until(lambda: outbox_rows(engine) == 0, 60, "the relay to publish the replays")
    records = replayed_records(settings, WHATSAPP, at_least=300)
    counts = Counter(m.key() for m in records)
    assert len(counts) == 300 and set(counts.values()) == {1}, "each dead letter replayed exactly once"
    for message in records:
        headers = {k: v.decode() for k, v in message.headers()}
        assert headers[h.REPLAY_COUNT] == "1" and headers["x-upstream"] == "kept"
        assert not {h.ATTEMPT, h.ERROR_CLASS, h.DUE_AT, h.ORIGINAL_TOPIC, h.FIRST_FAILED_AT} & set(headers)
    with Session(engine) as session:
        actions = session.scalars(sa.select(DeadLetterAction).order_by(DeadLetterAction.id)).all()
        states = Counter(session.scalars(sa.select(DeadLetter.state)))
    assert [(a.actor, a.row_count, a.finished_at is None) for a in actions] == [
        ("first", 150, True), ("second", 150, False)], "the killed run's audit entry says what it did"
    assert sorted(actions[0].row_ids + actions[1].row_ids) == ids
    assert states == {"replayed": 300}


def replayed_so_far(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM dead_letters WHERE state = 'replayed'")).scalar_one()


def outbox_rows(engine) -> int:
    with Session(engine) as session:
        return session.scalar(sa.select(sa.func.count()).select_from(OutboxRecord)) or 0


def test_two_replays_at_once_take_each_dead_letter_once(settings, engine):
    put_dead_letters(settings, [failed_request(n) for n in range(400)])
    index(settings)
    results = []
    runners = [threading.Thread(target=lambda who=who: results.append(
        replay(engine, DeadLetterFilter(topic="whatsapp"), actor=who, batch_size=10))) for who in ("a", "b")]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(120)
    assert sum(r.done for r in results) == 400, [r.as_dict() for r in results]
    with Session(engine) as session:
        keys = Counter(session.scalars(sa.select(OutboxRecord.message_key)))
    assert len(keys) == 400 and set(keys.values()) == {1}, "nothing replayed twice"


def test_retry_target_discard_and_filters(settings, engine):
    put_dead_letters(settings, [failed_request(n, retried=True) for n in range(6)])
    keyless = SourceRecord(WHATSAPP, 0, 99, None, b"x", {}, 1)
    put_dead_letters(settings, [keyless, SourceRecord(REGISTRATION_EVENTS, 0, 5, b"REG-1", b"y", {}, 1)],
                     error_class="UndecodableRecord")
    index(settings)
    preview = replay(engine, DeadLetterFilter(error_class="UndecodableRecord"), actor="t", target="retry",
                     dry_run=True)
    assert (preview.matched, preview.done, preview.action_id) == (2, 0, None)
    assert sum(preview.skipped.values()) == 2, preview.skipped
    with pytest.raises(DeadLetterOpsError, match="unknown replay target"):
        replay(engine, DeadLetterFilter(), actor="t", target="elsewhere")
    first_two = DeadLetterFilter(text="+628120000001")
    assert replay(engine, first_two, actor="t", target="retry").done == 1
    rejected = DeadLetterFilter(topic="whatsapp", error_class="ProviderRejected")
    assert discard(engine, rejected, actor="ops").done == 5
    assert replay(engine, rejected, actor="t").done == 0, "a discarded row is not open"
    with Session(engine) as session:
        (retried,) = session.scalars(sa.select(OutboxRecord)).all()
        states = Counter(session.scalars(sa.select(DeadLetter.state)))
    assert retried.topic == retry_topic(WHATSAPP, 1)
    assert retried.headers[h.ORIGINAL_TOPIC] == WHATSAPP, "a second failure goes to the same DLQ"
    assert h.ATTEMPT not in retried.headers and h.FIRST_FAILED_AT not in retried.headers
    assert h.parse_iso(retried.headers[h.DUE_AT]) <= datetime.now(UTC)
    assert states == {"replayed": 1, "discarded": 5, "open": 2}


def test_dead_letters_are_found_by_a_payload_field_and_replayed_a_limited_number_oldest_first(
        settings, engine):
    """Seed 001's `?user_id=` and `--limit`: by a field of the request (a catalog parameter)."""
    put_dead_letters(settings, [failed_request(n) for n in range(6)])
    index(settings)
    with Session(engine) as session:
        found = list_dead_letters(session, DeadLetterFilter(fields=(("params.name", "P3"),)))
        ids = sorted(session.scalars(sa.select(DeadLetter.id)))
    assert [row.key_text for row in found.rows] == [notification_id("REG-00003", "e_ticket", "whatsapp")]
    with pytest.raises(DeadLetterOpsError, match="dotted path"):
        DeadLetterFilter(fields=(("params..name", "P3"),))
    listed = subprocess.run([*HERALD, "dlq", "list", "--field", "params.name=P4", "--json"],
                            env=process_env(settings), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["key"] for line in listed.stdout.splitlines()] == [
        notification_id("REG-00004", "e_ticket", "whatsapp")]
    assert replay(engine, DeadLetterFilter(), actor="t", limit=2, dry_run=True).matched == 2
    done = replay(engine, DeadLetterFilter(), actor="t", limit=2)
    with Session(engine) as session:
        replayed = sorted(session.scalars(sa.select(DeadLetter.id).where(DeadLetter.state == "replayed")))
    assert (done.done, replayed) == (2, ids[:2])


def test_a_dead_lettered_notification_replayed_from_the_cli_is_delivered_once(settings, engine, log_dir):
    with simulator_network(log_dir, gateway_instances=1) as (network, _group):
        network.faults(network.email, fail_next=1, status=400)
        produce_requests(settings, "email", range(5))
        configured = fast_settings(settings, network)
        with delivering(configured, "email"):
            wait_until(lambda: network.accepted("email") >= 4, 60, "the other four")
            index(settings)
            with Session(engine) as session:
                (dead,) = session.scalars(sa.select(DeadLetter)).all()
            assert dead.error_class == "ProviderRejected" and dead.state == "open"
            env = process_env(configured, network)
            listed = subprocess.run([*HERALD, "dlq", "list", "--json", "--topic", "email"], env=env,
                                    capture_output=True, text=True, timeout=60)
            assert json.loads(listed.stdout)["key"] == dead.key_text, listed.stderr
            assert "@example.test" not in listed.stdout.replace("•••@example.test", ""), "masked in lists"
            replayed = subprocess.run([*HERALD, "dlq", "replay", str(dead.id), "--to", "retry"], env=env,
                                      capture_output=True, text=True, timeout=60)
            assert replayed.returncode == 0 and json.loads(replayed.stdout)["done"] == 1, replayed.stderr
            again = subprocess.run([*HERALD, "dlq", "replay", str(dead.id), "--to", "retry"], env=env,
                                   capture_output=True, text=True, timeout=60)
            assert again.returncode == 1, "nothing replayed is no success"
            assert "already replayed (by cli:" in again.stderr and "nothing was replayed" in again.stderr
            with Session(engine) as session:
                assert session.scalar(sa.select(sa.func.count()).select_from(DeadLetterAction)) == 1, \
                    "no empty audit entry"
            with running_relay(settings):
                wait_until(lambda: network.accepted("email") >= 5, 60, "the replayed notification")
            latest = latest_statuses(settings, 6)  # 4 sent, 1 dead-lettered, 1 sent once replayed
        stats = network.stats("email")
    assert (stats["accepted"], stats["duplicates"]) == (5, 0)
    assert latest[dead.key_text]["status"] == "sent"
