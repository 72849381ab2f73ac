"""The console's per-minute graphs, from the status processor's counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from herald.ops.status_graphs import minute_starts, per_minute

NOW = datetime(2026, 12, 3, 10, 15, 42, tzinfo=UTC)


def count(minutes_ago: int, status: str, n: int, kind: str = "e_ticket", channel: str = "email") -> dict:
    return {"window_start": NOW.replace(second=0) - timedelta(minutes=minutes_ago), "notification_type": kind,
            "channel": channel, "status": status, "count": n}


def test_the_windows_are_the_last_minutes_oldest_first() -> None:
    windows = minute_starts(NOW, 3)
    assert windows == [datetime(2026, 12, 3, 10, m, tzinfo=UTC) for m in (13, 14, 15)]


def test_each_notification_and_channel_is_a_series_of_its_counts_per_minute() -> None:
    windows = minute_starts(NOW, 3)
    series = per_minute([count(0, "sent", 7), count(2, "sent", 3), count(1, "retry_scheduled", 2),
                         count(1, "dead_lettered", 1), count(0, "sent", 4, channel="whatsapp"),
                         count(5, "sent", 99),  # before the first window shown
                         count(0, "failed", 5)], windows)  # a status the graphs do not draw
    email, whatsapp = series
    assert email == {"notification_type": "e_ticket", "channel": "email", "sent": [3, 0, 7],
                     "retry_scheduled": [0, 2, 0], "dead_lettered": [0, 1, 0]}
    assert whatsapp == {"notification_type": "e_ticket", "channel": "whatsapp", "sent": [0, 0, 4],
                        "retry_scheduled": [0, 0, 0], "dead_lettered": [0, 0, 0]}
