"""A message repeating during an outage is logged once per window, then with how many were held."""

from __future__ import annotations

import logging

from herald.infra.logs import RepeatFilter


def record(message: str, level: int = logging.ERROR, name: str = "herald.rdkafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_repeats_within_the_window_are_held_back_and_counted_on_the_next_line():
    now = [0.0]
    repeats = RepeatFilter(window_s=10, clock=lambda: now[0])
    refused = "Connect to ipv4#127.0.0.1:40449 failed: Connection refused (after {}ms in state CONNECT)"
    assert repeats.filter(record(refused.format(0)))
    shown = []
    for n in range(1, 200):  # every 50 ms: 199 more in the next 10 s, numbers differing
        now[0] = n * 0.05
        shown.append(repeats.filter(record(refused.format(n % 3))))
    assert not any(shown), "held back for 10 s after the line shown"
    line = record(refused.format(7))
    now[0] = 10.0
    assert repeats.filter(line)
    assert line.getMessage().endswith("(after 7ms in state CONNECT) (and 199 like it in the last 10 s)")


def test_other_messages_loggers_and_info_lines_pass():
    repeats = RepeatFilter(window_s=10, clock=lambda: 0.0)
    assert repeats.filter(record("broker down"))
    assert repeats.filter(record("broker down", name="aiokafka"))
    assert repeats.filter(record("broker down", level=logging.WARNING))
    assert repeats.filter(record("another message"))
    assert all(repeats.filter(record("delivered", level=logging.INFO)) for _ in range(5))
    assert not repeats.filter(record("broker down"))
