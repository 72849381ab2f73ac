"""Supervised child processes in the foreground: what `herald run` keeps alive.

Each child is started with its stdout and stderr on one pipe. A thread per child copies every
line to the child's own log file and, prefixed with its name, to the terminal. A child that
exits while the supervisor runs is started again after a backoff (`restart_delay_s`), and the
restart is logged and counted. A stop (SIGTERM or Ctrl-C in the caller) sends SIGTERM to every
child and SIGKILL to those still there at the deadline.

What runs is written to a state file after every change (pids, start times, restarts), so
`herald status` can show it and `herald down` can stop it from another shell, and check by pid
that nothing is left.

Why not a kept supervisor: supervisord is a daemon configured by INI files that gives a process
up (FATAL) after `startretries` quick failures, with its state behind XML-RPC; honcho gives the
prefixed foreground log but no restarts (one exit stops all, as Foreman does); circus brings
ZeroMQ and an arbiter daemon of its own. Herald needs a foreground run that never gives a stage
up, with counters in a file its own CLI reads; that is this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from herald.infra.deadline import Deadline
from herald.infra.processes import pid_alive, terminate

log = logging.getLogger(__name__)
Echo = Callable[[str], None]  # one prefixed line for the terminal


def restart_delay_s(restarts: int, first_s: float = 0.5, max_s: float = 30.0) -> float:
    """Backoff before restart number `restarts + 1`: doubling from `first_s`, capped at `max_s`."""
    return min(max_s, first_s * 2 ** min(restarts, 16))


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # unique in the run; also the log file's name and the process's instance id
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the run's environment
    stage: str = ""  # what it runs, as `herald status` names stages


@dataclass
class Child:
    spec: ProcessSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.time() of the current process
    restarts: int = 0
    failures_in_a_row: int = 0  # exits within `steady_s` of their start: each doubles the backoff
    restart_at: float | None = None  # time.monotonic() of a pending restart
    last_exit: int | None = None

    def snapshot(self) -> dict[str, Any]:
        alive = self.process is not None and self.process.poll() is None
        return {"pid": self.process.pid if alive and self.process else None, "stage": self.spec.stage,
                "restarting": self.restart_at is not None,
                "argv": list(self.spec.argv),
                "started_at": self.started_at if alive else None, "restarts": self.restarts,
                "last_exit": self.last_exit}


@dataclass(frozen=True)
class SupervisorConfig:
    log_dir: Path  # one <name>.log per child
    state_path: Path  # what runs, for `herald status` and `herald down`
    stop_timeout_s: float = 30.0  # SIGTERM to SIGKILL, for all children together
    steady_s: float = 60.0  # a child up this long has its backoff reset
    check_interval_s: float = 0.2


class Supervisor:
    def __init__(self, config: SupervisorConfig, specs: Sequence[ProcessSpec], env: Mapping[str, str],
                 echo: Echo) -> None:
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique: {names}")
        self._config = config
        self._env = dict(env)
        self._echo = echo
        self._echo_lock = threading.Lock()
        self.children = {spec.name: Child(spec) for spec in specs}
        self._readers: list[threading.Thread] = []

    @property
    def restarts(self) -> int:
        return sum(child.restarts for child in self.children.values())

    def run(self, stop: threading.Event) -> None:
        """Start every child, keep each alive until `stop` is set, then stop them all."""
        self._config.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for child in self.children.values():
                self._start(child)
            self._write_state()
            while not stop.wait(self._config.check_interval_s):
                if self._check_children():
                    self._write_state()
        finally:
            self._stop_all()
            self._write_state(running=False)

    def _check_children(self) -> bool:
        """Schedule a restart for each child that exited, start those due; True if any changed."""
        changed, now = False, time.monotonic()
        for child in self.children.values():
            if child.restart_at is None and child.process is not None and child.process.poll() is not None:
                self._schedule_restart(child)
                changed = True
            elif child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                self._start(child)
                changed = True
        return changed

    def _schedule_restart(self, child: Child) -> None:
        assert child.process is not None
        child.last_exit = child.process.returncode
        up_s = time.time() - child.started_at
        child.failures_in_a_row = 0 if up_s >= self._config.steady_s else child.failures_in_a_row + 1
        delay = restart_delay_s(max(0, child.failures_in_a_row - 1))
        child.restart_at = time.monotonic() + delay
        log.warning("%s (pid %d) exited with status %s after %.1f s; restarting in %.1f s (restart %d)",
                    child.spec.name, child.process.pid, child.last_exit, up_s, delay, child.restarts + 1)
        self._say(child.spec.name, f"exited with status {child.last_exit}; restarting in {delay:.1f} s")

    def _start(self, child: Child) -> None:
        log_path = self._config.log_dir / f"{child.spec.name}.log"
        process = subprocess.Popen(child.spec.argv, env={**self._env, **child.spec.env},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # Ctrl-C reaches the supervisor, which stops them
        child.process, child.started_at = process, time.time()
        assert process.stdout is not None
        reader = threading.Thread(target=self._copy_lines, args=(child.spec.name, process.stdout, log_path),
                                  name=f"log-{child.spec.name}", daemon=True)
        reader.start()
        self._readers.append(reader)
        log.info("started %s (pid %d)", child.spec.name, process.pid)

    def _copy_lines(self, name: str, stream: IO[bytes], log_path: Path) -> None:
        with stream, open(log_path, "ab") as file:
            for raw in stream:
                file.write(raw)
                file.flush()
                self._say(name, raw.decode(errors="replace").rstrip("\n"))

    def _say(self, name: str, line: str) -> None:
        with self._echo_lock:
            self._echo(f"{name:>{self._width()}} | {line}")

    def _width(self) -> int:
        return max(len(name) for name in self.children)

    def _stop_all(self) -> None:
        """SIGTERM to every live child, then SIGKILL to what is left at the deadline."""
        deadline = Deadline(self._config.stop_timeout_s)
        live = [child.process for child in self.children.values()
                if child.process is not None and child.process.poll() is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in live:  # waited for through Popen, which keeps each one's exit status
            try:
                process.wait(timeout=max(0.0, deadline.remaining()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d outlived the stop's deadline: killed", process.pid)
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(timeout=2.0)

    def _write_state(self, running: bool = True) -> None:
        state = {"supervisor": os.getpid() if running else None, "updated_at": time.time(),
                 "processes": {name: child.snapshot() for name, child in self.children.items()}}
        write_state(self._config.state_path, state)


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def live_pids(state: Mapping[str, Any] | None) -> dict[str, int]:
    """Name -> pid of every process of a run state still alive (the supervisor as "supervisor")."""
    if not state:
        return {}
    pids = {name: entry.get("pid") for name, entry in state.get("processes", {}).items()}
    pids["supervisor"] = state.get("supervisor")
    return {name: pid for name, pid in pids.items() if isinstance(pid, int) and pid_alive(pid)}


def process_rows(state: Mapping[str, Any] | None, now: float) -> list[dict[str, Any]]:
    """Each process of a run state: its stage, state, pid, uptime and restarts."""
    if not state:
        return []
    live = live_pids(state)
    supervised = "supervisor" in live  # a restart is pending only while its supervisor lives
    rows = []
    for name, entry in state.get("processes", {}).items():
        pid, started = live.get(name), entry.get("started_at")
        rows.append({
            "process": name, "stage": entry.get("stage", ""),
            "state": _process_state(pid, bool(entry.get("restarting")) and supervised),
            "pid": pid, "uptime_s": round(now - started, 1) if pid and started else None,
            "restarts": entry.get("restarts", 0), "last_exit": entry.get("last_exit"),
        })
    return rows


def _process_state(pid: int | None, restarting: bool) -> str:
    return "running" if pid else "restarting" if restarting else "stopped"


def stop_run(path: Path, timeout_s: float) -> list[str]:
    """Stop a run from outside: SIGTERM to its supervisor (which stops its children), then
    SIGTERM and, at the deadline, SIGKILL to any child still alive. Names what was stopped."""
    pids = live_pids(read_state(path))
    deadline = Deadline(timeout_s)
    supervisor = pids.pop("supervisor", None)
    if supervisor is not None:
        terminate(supervisor, deadline)
    for pid in pids.values():
        if pid_alive(pid):
            terminate(pid, deadline)
    stopped = sorted(pids) + (["supervisor"] if supervisor is not None else [])
    if stopped:
        state = read_state(path) or {}
        processes = {name: {**entry, "pid": None} for name, entry in state.get("processes", {}).items()}
        write_state(path, {**state, "supervisor": None, "processes": processes})
    return stopped
