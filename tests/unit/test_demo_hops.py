"""The delivery hop splits at the moment a read_committed reader had the request: the router's
commit before it, the worker's fetch and the provider call after it. The writer's time before
its commit is named apart."""

from __future__ import annotations

from herald.proving import demo_hops
from herald.proving.demo_hops import HOPS, WRITER, hop_latencies
from herald.schemas.ids import notification_id

REGISTRATIONS = {f"REG-{n}": 1000.0 + n for n in range(4)}  # verifying commits, ms
TICKETS = {notification_id(r, "e_ticket", "email").encode(): r for r in REGISTRATIONS}


def timestamps(_bootstrap, topic, wanted, event_type=None):
    """The topics' record timestamps: the relay takes 10 ms, the router 20 ms."""
    if topic.endswith("registrations.events"):
        return {r.encode(): at + 10 for r, at in REGISTRATIONS.items()}
    return {key: REGISTRATIONS[TICKETS[key]] + 30 for key in wanted}


def test_the_delivery_hop_splits_where_the_reader_saw_the_request(monkeypatch):
    registrations, tickets = REGISTRATIONS, TICKETS
    monkeypatch.setattr(demo_hops, "read_timestamps", timestamps)
    accepted = {"email": {r: at + 55 for r, at in registrations.items()}}  # delivery: 25 ms
    seen = {key: registrations[r] + 48 for key, r in list(tickets.items())[:3]}  # one never seen

    hops = hop_latencies("kafka:9092", "", ["email"], registrations, accepted, seen)

    assert {hop: hops[hop]["p50_ms"] for hop in HOPS} == {"relay": 10.0, "router": 20.0, "delivery": 25.0}
    assert hops["delivery_commit"] == {"p50_ms": 18.0, "p99_ms": 18.0, "samples": 3}
    assert hops["delivery_call"] == {"p50_ms": 7.0, "p99_ms": 7.0, "samples": 3}
    assert hops["delivery"]["samples"] == 4


def test_without_a_reader_there_are_only_the_three_hops(monkeypatch):
    monkeypatch.setattr(demo_hops, "read_timestamps", timestamps)
    accepted = {"email": {r: at + 55 for r, at in REGISTRATIONS.items()}}
    hops = hop_latencies("kafka:9092", "", ["email"], REGISTRATIONS, accepted)
    assert set(hops) == set(HOPS)
    assert hops["delivery"] == {"p50_ms": 25.0, "p99_ms": 25.0, "samples": 4}


def test_the_writers_own_time_before_its_commit_is_named_and_left_out_of_the_hops(monkeypatch):
    monkeypatch.setattr(demo_hops, "read_timestamps", timestamps)
    accepted = {"email": {r: at + 55 for r, at in REGISTRATIONS.items()}}
    changed = {r: at - 6 - n for n, (r, at) in enumerate(REGISTRATIONS.items())}  # 6 to 9 ms before

    hops = hop_latencies("kafka:9092", "", ["email"], REGISTRATIONS, accepted, changed_ms=changed)

    assert hops[WRITER]["samples"] == 4
    assert hops[WRITER]["p50_ms"] == 7.5
    assert {hop: hops[hop]["p50_ms"] for hop in HOPS} == {"relay": 10.0, "router": 20.0, "delivery": 25.0}

