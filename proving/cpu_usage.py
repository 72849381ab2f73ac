"""CPU seconds spent so far by each part of the machine, for benchmarks to say where time went.

Read from Linux's /proc: every process is put in one part, named by the bench (its own
processes, by pid), or recognised by its command line (the Kafka broker, PostgreSQL and its
backends); the bench's own process is the load generator. Threads count with their process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

BROKER, DATABASE, LOAD, OTHER = "broker", "postgres", "load generator", "other"

# (part, pid) -> CPU seconds: keyed by process, so one that ends between readings drops out
# alone instead of taking its time off its whole part.
CpuReading = dict[tuple[str, int], float]


def cpu_by_process(named_pids: Mapping[int, str]) -> CpuReading:
    """(part, pid) -> CPU seconds (user + system) of the processes alive now."""
    ticks = os.sysconf("SC_CLK_TCK")
    parts: CpuReading = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:  # ended meanwhile
            continue
        parts[(_part_of(pid, command, named_pids), pid)] = (int(fields[11]) + int(fields[12])) / ticks
    return parts


def cpu_of(named_pids: Mapping[int, str]) -> dict[str, float]:
    """name -> CPU seconds (user + system) of just these processes: cheap enough to read
    many times a second, where `cpu_by_process` reads every process of the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for pid, name in named_pids.items():
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        spent[name] = spent.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return spent


def _part_of(pid: int, command: bytes, named_pids: Mapping[int, str]) -> str:
    if pid in named_pids:
        return named_pids[pid]
    if pid == os.getpid():
        return LOAD
    if b"kafka.Kafka" in command:
        return BROKER
    if command.startswith(b"postgres") or b"/bin/postgres" in command:
        return DATABASE
    return OTHER


def spent_since(before: CpuReading, after: CpuReading) -> dict[str, float]:
    """CPU seconds per part between two readings, process by process: one that ended meanwhile
    (another test's broker) counts for nothing, where part totals went down by all its time."""
    spent: dict[str, float] = {}
    for (part, pid), seconds in after.items():
        used = seconds - before.get((part, pid), 0.0)
        if used > 0:
            spent[part] = spent.get(part, 0.0) + used
    return spent
