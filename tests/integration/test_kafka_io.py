"""produce_confirmed against a real broker: a full local queue slows it down, never fails it."""

from __future__ import annotations

from confluent_kafka import Producer

from herald.infra import kafka_io
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import produce_confirmed, producer_config
from herald.schemas.catalog import REGISTRATION_EVENTS, qualified
from tests.support import read_topic


def test_a_full_local_queue_waits_for_room_instead_of_failing(settings, monkeypatch):
    topic = qualified(REGISTRATION_EVENTS, settings.namespace)
    waits = []
    original = kafka_io.ConfirmedSend._produce_when_room
    monkeypatch.setattr(kafka_io.ConfirmedSend, "_produce_when_room",
                        lambda send, *record: (waits.append(record), original(send, *record)))
    # Room for 10 records in the local queue, 500 to send: produce() meets BufferError often.
    producer = Producer(producer_config(settings.kafka_bootstrap, 30, **{"queue.buffering.max.messages": 10}))
    records = [(topic, f"k{n % 7}".encode(), f"v{n}".encode(), {"n": str(n)}) for n in range(500)]

    assert produce_confirmed(producer, records, Deadline(60)) == 500

    assert waits, "the local queue never filled up: the test did not exercise the wait"
    seen = read_topic(settings.kafka_bootstrap, topic, at_least=500)
    assert sorted(message.value() for message in seen) == sorted(value for _t, _k, value, _h in records)
