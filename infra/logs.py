"""Logging for every Herald process: text or JSON lines, each carrying the request id and the
trace id of the work it is about, with phone numbers and email addresses masked.

The ids live in context variables: the ingest API binds them per request, a delivery worker
per record (from the record's correlation-id and W3C traceparent headers), and the provider
client forwards the trace as a `traceparent` header. So one trace id finds every log line of
one notification, from its ingest request to its provider call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any

from herald.infra.masking import mask_text

REQUEST_ID: ContextVar[str | None] = ContextVar("herald_request_id", default=None)
TRACE_ID: ContextVar[str | None] = ContextVar("herald_trace_id", default=None)
LOG_FORMATS = ("text", "json")
QUIET_LIBRARIES = ("alembic", "httpx", "httpx2", "aiokafka", "faust", "mode", "uvicorn.access")


def bind(*, request_id: str | None, trace_id: str | None) -> None:
    """The ids of the work this task does from now on (each asyncio task has its own)."""
    REQUEST_ID.set(request_id)
    TRACE_ID.set(trace_id)


class ContextFilter(logging.Filter):
    """Adds request_id and trace_id to every record and masks its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        record.trace_id = getattr(record, "trace_id", None) or TRACE_ID.get()
        record.msg, record.args = mask_text(record.getMessage()), None
        return True


class RepeatFilter(logging.Filter):
    """One line per `window_s` for a message that repeats (numbers aside), then how many were
    held back: a broker down for a minute otherwise logs a refused connect every 50 ms per client."""

    NUMBERS = re.compile(r"\d+")

    def __init__(self, window_s: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._window_s, self._clock = window_s, clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # -> (shown at, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, self.NUMBERS.sub("#", str(record.msg)))
        now = self._clock()
        shown_at, held = self._seen.get(key, (float("-inf"), 0))
        if now - shown_at < self._window_s:
            self._seen[key] = (shown_at, held + 1)
            return False
        if len(self._seen) > 1000:  # forget what has not repeated lately
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self._window_s}
        self._seen[key] = (now, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} (and {held} like it in the last " \
                                      f"{now - shown_at:.0f} s)", None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None), "trace_id": getattr(record, "trace_id", None),
            "process": record.process,
        }
        if record.exc_info:
            line["exception"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(trace_id)s]: %(message)s"


def configure_logging(level: str, log_format: str) -> None:
    """The root logger of this process: one handler on stderr, in `log_format`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; known: {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(RepeatFilter())
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@cache
def herald_version() -> str:
    try:
        return metadata.version("herald")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def log_start(logger: logging.Logger, stage: str, *, consumes: Iterable[str], produces: Iterable[str],
              groups: Iterable[str] = ()) -> None:
    """The one line a process writes when it starts: what it reads and writes, as whom."""
    group_list = ", ".join(groups) or "none"
    logger.info("%s starting (herald %s, pid %d): consumes %s; produces %s; consumer group(s) %s", stage,
                herald_version(), os.getpid(), ", ".join(consumes) or "nothing", ", ".join(produces) or
                "nothing", group_list)


def log_stop(logger: logging.Logger, stage: str, summary: object = "") -> None:
    """The one line a process writes when it stopped, with what it did."""
    logger.info("%s stopped%s", stage, f": {summary}" if summary else "")
