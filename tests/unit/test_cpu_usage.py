"""The bench's CPU accounting by part."""

from __future__ import annotations

from herald.proving.cpu_usage import spent_since


def test_a_process_that_ended_between_readings_takes_nothing_from_its_part():
    before = {("broker", 10): 50.0, ("broker", 11): 5.0, ("relay", 12): 1.0}
    after = {("broker", 11): 6.5, ("relay", 12): 1.25, ("relay", 13): 0.5}  # broker 10 ended
    assert spent_since(before, after) == {"broker": 1.5, "relay": 0.75}
