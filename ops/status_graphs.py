"""Per-minute outcome counts for the console's graphs, read from `notifications.status.stats`.

The status processor keeps one compacted record per (minute, notification, channel, status),
its latest count. A minute's records are written at or after its start, so reading the topic
from the first minute shown (`offsets_for_times`) finds every count of the minutes shown,
however long the topic has grown.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from herald.infra.kafka_views import live_entries
from herald.schemas.catalog import STATUS_STATS, qualified
from herald.schemas.codec import UndecodableRecord, decode_expecting

SHOWN = ("sent", "retry_scheduled", "dead_lettered")  # what the graphs draw, per minute


def minute_starts(now: datetime, minutes: int) -> list[datetime]:
    """The last `minutes` minute windows, oldest first, the current one last."""
    current = now.astimezone(UTC).replace(second=0, microsecond=0)
    return [current - timedelta(minutes=n) for n in range(minutes - 1, -1, -1)]


def per_minute(counts: Iterable[dict[str, Any]], windows: list[datetime]) -> list[dict[str, Any]]:
    """One series per (notification, channel): for each status shown, its count in each window."""
    index = {window: n for n, window in enumerate(windows)}
    series: dict[tuple[str, str], dict[str, list[int]]] = {}
    for count in counts:
        at = index.get(count["window_start"].astimezone(UTC))
        if at is None or count["status"] not in SHOWN:
            continue
        lines = series.setdefault((count["notification_type"], count["channel"]),
                                  {status: [0] * len(windows) for status in SHOWN})
        lines[count["status"]][at] = count["count"]  # one record per key: the minute's latest count
    return [{"notification_type": kind, "channel": channel, **lines}
            for (kind, channel), lines in sorted(series.items())]


def status_graphs(bootstrap: str, namespace: str, minutes: int,
                  now: datetime | None = None) -> dict[str, Any]:
    """The last `minutes` minutes of outcomes, per notification and channel, as the console draws them."""
    windows = minute_starts(now or datetime.now(UTC), minutes)
    since_ms = int(windows[0].timestamp() * 1000)
    entries = live_entries(bootstrap, qualified(STATUS_STATS, namespace), since_ms=since_ms)
    counts = []
    for entry in entries.values():
        try:
            counts.append(decode_expecting(entry.value, "herald.NotificationStatusStats"))
        except UndecodableRecord:
            continue  # the status processor writes these; one it did not is not a count
    return {"minutes": [window.isoformat() for window in windows], "series": per_minute(counts, windows)}
