"""Progress of long commands: plain periodic lines in a log, a bar on a terminal."""

from __future__ import annotations

import io

from herald.infra.progress import ProgressReporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_line_per_phase_start_end_and_at_most_one_per_interval_between() -> None:
    out, clock = io.StringIO(), Clock()
    progress = ProgressReporter("demo", out=out, interval_s=5.0, live=False, clock=clock)
    with progress.phase("registrations verified", total=1000) as update:
        for done in range(1, 1001):
            clock.now = done * 0.02  # 20 s in all
            update(done)
    with progress.phase("every stage catching up"):
        clock.now += 1.5
    assert out.getvalue().splitlines() == [
        "[demo] registrations verified (1000)...",
        "[demo] registrations verified: 250 of 1000 (5 s)",
        "[demo] registrations verified: 500 of 1000 (10 s)",
        "[demo] registrations verified: 750 of 1000 (15 s)",
        "[demo] registrations verified: 1000 of 1000 (20 s)",
        "[demo] registrations verified: done, 1000 of 1000 in 20.0 s",
        "[demo] every stage catching up...",
        "[demo] every stage catching up: done in 1.5 s",
    ]


def test_a_terminal_gets_a_bar_with_the_count() -> None:
    out = io.StringIO()
    with ProgressReporter("bench", out=out, live=True).phase("bench 1 of 2: relay", total=3) as update:
        update(2)
    shown = out.getvalue()
    assert "bench 1 of 2: relay" in shown and "3/3" in shown
