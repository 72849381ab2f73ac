"""One object bounding a whole operation (flush, commit, shutdown) instead of per-call timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Deadline:
    """Expires `seconds` from now, or `grace_s` after `stop` is first seen set, whichever is first.

    The grace is what bounds shutdown: work under way when SIGTERM arrives gets `grace_s`
    to finish, however long its own deadline was.
    """

    def __init__(self, seconds: float, *, stop: threading.Event | None = None, grace_s: float = 0.0) -> None:
        self._expires_at = time.monotonic() + seconds
        self._stop = stop
        self._grace_s = grace_s
        self._stop_seen = False

    def remaining(self) -> float:
        now = time.monotonic()
        if self._stop is not None and not self._stop_seen and self._stop.is_set():
            self._stop_seen = True
            self._expires_at = min(self._expires_at, now + self._grace_s)
        return max(0.0, self._expires_at - now)

    def expired(self) -> bool:
        return self.remaining() == 0.0


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll `condition` until it holds; TimeoutError naming `what` after `timeout_s`."""
    deadline = Deadline(timeout_s)
    while not condition():
        if deadline.expired():
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
