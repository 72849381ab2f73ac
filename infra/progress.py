"""Progress of a long command: a rich bar on a terminal, plain periodic lines otherwise.

A command names its phases (`phase`), and within one reports how far it got (`update`). On a
terminal each phase is a live bar with its count; in a log or a pipe it is a line when the
phase starts, a line at most every `interval_s` while the count moves, and a line when it
ends, so a CI log shows where a long run is without a flood.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

Update = Callable[[int], None]  # how many of the phase's items are done


class ProgressReporter:
    def __init__(self, name: str, out: TextIO | None = None, interval_s: float = 5.0,
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name  # the command, as each plain line starts
        self._out = out if out is not None else sys.stderr
        self._interval_s = interval_s
        self._live = self._out.isatty() if live is None else live
        self._clock = clock

    @contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator[Update]:
        """One phase of the command; yields the function that reports its count."""
        if self._live:
            with self._bar(description, total) as update:
                yield update
            return
        with self._lines(description, total) as update:
            yield update

    @contextmanager
    def _bar(self, description: str, total: int | None) -> Iterator[Update]:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn()]
        with Progress(*columns, console=Console(file=self._out), transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done: bar.update(task, completed=done)
            bar.update(task, completed=bar.tasks[0].completed if total is None else total)

    @contextmanager
    def _lines(self, description: str, total: int | None) -> Iterator[Update]:
        began, last_said = self._clock(), self._clock()
        done = [0]
        of = "" if total is None else f" of {total}"
        self._say(f"{description}{' (' + str(total) + ')' if total is not None else ''}...")

        def update(count: int) -> None:
            nonlocal last_said
            done[0] = count
            if self._clock() - last_said >= self._interval_s:
                last_said = self._clock()
                self._say(f"{description}: {count}{of} ({last_said - began:.0f} s)")

        yield update
        self._say(f"{description}: done{'' if total is None else f', {done[0]}{of}'} "
                  f"in {self._clock() - began:.1f} s")

    def _say(self, line: str) -> None:
        print(f"[{self._name}] {line}", file=self._out, flush=True)
