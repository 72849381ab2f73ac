"""`herald bench report` (`make bench`): the baselines and the relay, delivery and stream
benchmarks in one run, written to docs/benchmarks.md with PNG plots beside it.

Each benchmark runs as the `herald bench ...` command a reader would type (shown beside its
figures), in a process of its own; its last stdout line is its JSON result. Every figure is
put next to the baseline measured in the same run, because on a shared machine absolute rates
are noise and only the ratios carry over.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from herald.infra.processes import ServiceError
from herald.infra.progress import ProgressReporter
from herald.ops.launch import HERALD_ARGV
from herald.proving.bench_plots import write_plots
from herald.proving.bench_tables import report_sections

CHANNEL_BENCHES = ("email-smtp", "webhook")  # `herald bench deliver --channel KIND`


@dataclass(frozen=True)
class BenchCommand:
    name: str
    args: tuple[str, ...]  # after `herald`

    @property
    def shell(self) -> str:
        return " ".join(("herald", *self.args))


def bench_commands(quick: bool) -> list[BenchCommand]:
    """The full sizes of `make bench`, or small ones (`--quick`) that only prove the report."""
    if quick:
        return [BenchCommand("baselines", ("bench", "baselines", "--records", "50000", "--seconds", "2")),
                BenchCommand("relay", ("bench", "relay", "--events", "5000", "--keys", "500",
                                       "--seconds", "2")),
                BenchCommand("deliver", ("bench", "deliver", "--campaign", "500", "--rate", "100",
                                         "--seconds", "2", "--scale-records", "400")),
                BenchCommand("streams", ("bench", "streams", "--events", "2000", "--alert-events", "60",
                                         "--rate", "60", "--sla-s", "2")),
                BenchCommand("e2e", ("bench", "e2e", "--registrations", "100", "--rate", "50")),
                *(BenchCommand(f"deliver-{kind}", ("bench", "deliver", "--channel", kind,
                                                   "--messages", "300")) for kind in CHANNEL_BENCHES)]
    return [BenchCommand("baselines", ("bench", "baselines")), BenchCommand("relay", ("bench", "relay")),
            BenchCommand("deliver", ("bench", "deliver")), BenchCommand("streams", ("bench", "streams")),
            BenchCommand("e2e", ("bench", "e2e")),
            *(BenchCommand(f"deliver-{kind}", ("bench", "deliver", "--channel", kind))
              for kind in CHANNEL_BENCHES)]


def run_command(command: BenchCommand, environ: dict[str, str]) -> dict[str, Any]:
    """Run one bench, echoing its output; its result is the last JSON line it printed."""
    print(f"\n$ {command.shell}", flush=True)
    process = subprocess.Popen([*HERALD_ARGV, *command.args], env=environ, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    last_json: dict[str, Any] | None = None
    for line in process.stdout:
        sys.stdout.write(line)
        if line.startswith("{"):
            last_json = json.loads(line)
    if process.wait() != 0 or last_json is None:
        raise ServiceError(f"`{command.shell}` failed (exit {process.returncode}); see its output above")
    return last_json


def machine_summary() -> str:
    cpus = os.cpu_count() or 0
    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal")), 0)
    return (f"{cpus} CPUs ({model}), {mem_kb / 1024 / 1024:.1f} GiB memory, "
            f"{platform.system()} {platform.release()}")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def run_report(out: Path, quick: bool, environ: dict[str, str]) -> Path:
    commands = bench_commands(quick)
    progress, results = ProgressReporter("bench"), {}
    for number, command in enumerate(commands, 1):
        with progress.phase(f"bench {number} of {len(commands)}: {command.name}"):
            results[command.name] = run_command(command, environ)
    shells = {command.name: command.shell for command in commands}
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = write_plots(results, out.parent / "benchmarks")
    out.write_text(render_report(results, shells, machine_summary(), datetime.now(UTC),
                                 [p.relative_to(out.parent) for p in plots]))
    return out


def render_report(results: dict[str, dict[str, Any]], shells: dict[str, str], machine: str,
                  measured_at: datetime, plots: Sequence[Path]) -> str:
    head = ["# Herald benchmarks", "",
            f"Measured {measured_at:%Y-%m-%d %H:%M} UTC on {machine},",
            "by `make bench` (`herald bench report`).",
            "Every figure stands beside a baseline measured in the same run, on the same broker and",
            "database: Kafka's own `ProducerPerformance` for publishing, pgbench for the database,",
            "and each stage's raw client for the rest. On shared machines the absolute rates are noise;",
            "compare the ratios. Each table names the command that produced it: run it again to check.", ""]
    body = report_sections(results, shells)
    figures = ["## Plots", "", *(f"![{p.stem}]({p.as_posix()})" for p in plots), ""]
    return "\n".join([*head, *body, *figures])
