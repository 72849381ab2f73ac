"""The embedded services of one test run, shared by its pytest-xdist workers.

Without xdist, the session fixture starts what is not running and stops it at the end. With
workers (`make test` runs two), the first to get the lock starts the services and every
worker reuses them; what was started is written down beside them, and the controller, which
outlives the workers, stops it once all of them finished (`stop_what_workers_started`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from herald.infra.services import Endpoints, Started, start_services, stop_services
from herald.infra.settings import Settings

_NOTE = "test-run-started.json"


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "test-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def start_for_worker(settings: Settings) -> Endpoints:
    """Start (or reuse) the services under the lock, noting what this run started."""
    with _locked(settings.home):
        found, started = start_services(settings)
        note = settings.home / _NOTE
        before = Started(**json.loads(note.read_text())) if note.exists() else Started(False, False, False)
        merged = Started(*(a or b for a, b in zip(dataclasses.astuple(before), dataclasses.astuple(started),
                                                   strict=True)))
        note.write_text(json.dumps(dataclasses.asdict(merged)))
    return found


def stop_what_workers_started(settings: Settings) -> list[str]:
    """The controller, after every worker ended: stop what the run's workers started."""
    note = settings.home / _NOTE
    if not note.exists():
        return []
    with _locked(settings.home):
        started = Started(**json.loads(note.read_text()))
        note.unlink()
        return stop_services(settings, started)
