"""The supervisor `herald run` uses, on real (tiny) child processes: restarts with backoff,
prefixed lines, a bounded stop, and a state file another process can stop the run from."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from herald.infra.deadline import Deadline, wait_until
from herald.infra.processes import pid_alive, terminate
from herald.infra.supervisor import (
    ProcessSpec,
    Supervisor,
    SupervisorConfig,
    live_pids,
    process_rows,
    read_state,
    restart_delay_s,
    stop_run,
)

SLEEPER = (sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)")
STUBBORN = (sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                  "print('up', flush=True); time.sleep(60)")
CRASHER = (sys.executable, "-c", "import sys; print('crashing', flush=True); sys.exit(3)")


def config(tmp_path: Path, **overrides: float) -> SupervisorConfig:
    return SupervisorConfig(log_dir=tmp_path / "logs", state_path=tmp_path / "run" / "state.json",
                            **{"stop_timeout_s": 5.0, "check_interval_s": 0.05, **overrides})


class Running:
    """A supervisor in a thread, stopped (and joined) on exit."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor, self.stop = supervisor, threading.Event()
        self.thread = threading.Thread(target=supervisor.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def test_the_backoff_doubles_from_half_a_second_up_to_its_cap() -> None:
    assert [restart_delay_s(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay_s(10_000) == 30.0


def test_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor(config(tmp_path), [ProcessSpec("a", SLEEPER), ProcessSpec("a", SLEEPER)], os.environ,
                   echo=print)


def test_a_killed_child_comes_back_each_time_and_each_restart_is_counted(tmp_path: Path) -> None:
    lines: list[str] = []
    specs = [ProcessSpec("sleeper", SLEEPER), ProcessSpec("other", SLEEPER)]
    supervisor = Supervisor(config(tmp_path), specs, os.environ, echo=lines.append)
    with Running(supervisor):
        child = supervisor.children["sleeper"]
        for kill in range(3):
            wait_until(lambda starts=kill + 1: lines.count("sleeper | up") == starts, 10, "a start")
            os.kill(child.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        wait_until(lambda: lines.count("sleeper | up") == 4, 10, "the first start and three restarts")
        assert child.restarts == 3 and child.process is not None and child.process.poll() is None
        other = supervisor.children["other"]
        assert other.restarts == 0 and other.process is not None and other.process.poll() is None
    assert child.last_exit == -signal.SIGKILL
    assert sum("sleeper | exited with status -9" in line for line in lines) == 3
    assert (tmp_path / "logs" / "sleeper.log").read_text().splitlines() == ["up"] * 4


def test_a_child_that_keeps_failing_waits_longer_each_time(tmp_path: Path) -> None:
    supervisor = Supervisor(config(tmp_path), [ProcessSpec("crasher", CRASHER)], os.environ,
                            echo=lambda _: None)
    started: list[float] = []
    with Running(supervisor):
        child = supervisor.children["crasher"]
        seen = None
        deadline = Deadline(10)
        while len(started) < 4 and not deadline.expired():  # the first start and three restarts
            if child.process is not None and child.process is not seen:
                seen = child.process
                started.append(child.started_at)
            time.sleep(0.01)
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert len(gaps) == 3, started
    # 0.5, 1 and 2 s of backoff, each after the child's own run (a Python start, well under 0.5 s)
    for gap, backoff in zip(gaps, (0.5, 1.0, 2.0), strict=True):
        assert backoff <= gap < backoff + 2.0, gaps
    assert child.last_exit == 3


def test_a_stop_ends_every_child_and_kills_one_that_ignores_sigterm_at_the_deadline(tmp_path: Path) -> None:
    supervisor = Supervisor(config(tmp_path, stop_timeout_s=1.0),
                            [ProcessSpec("polite", SLEEPER), ProcessSpec("stubborn", STUBBORN)],
                            os.environ, echo=lambda _: None)
    running = Running(supervisor)
    with running:
        wait_until(lambda: all((tmp_path / "logs" / f"{n}.log").exists()
                               and "up" in (tmp_path / "logs" / f"{n}.log").read_text()
                               for n in ("polite", "stubborn")), 10, "both children to start")
        pids = [child.process.pid for child in supervisor.children.values()]  # type: ignore[union-attr]
        began = time.monotonic()
    assert time.monotonic() - began < 5.0
    assert not any(pid_alive(pid) for pid in pids)
    assert supervisor.children["stubborn"].process.returncode == -signal.SIGKILL  # type: ignore[union-attr]
    state = read_state(tmp_path / "run" / "state.json")
    assert state is not None and state["supervisor"] is None
    assert all(entry["pid"] is None for entry in state["processes"].values())


def test_the_state_file_shows_each_process_and_its_restarts(tmp_path: Path) -> None:
    supervisor = Supervisor(config(tmp_path), [ProcessSpec("sleeper", SLEEPER, stage="deliver:email")],
                            os.environ, echo=lambda _: None)
    with Running(supervisor):
        child = supervisor.children["sleeper"]
        wait_until(lambda: child.process is not None, 10, "the child")
        first = child.process.pid  # type: ignore[union-attr]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: child.restarts == 1 and child.process is not None and child.process.pid != first,
                   10, "the restart")
        wait_until(lambda: (read_state(tmp_path / "run" / "state.json") or {}).get("processes", {})
                   .get("sleeper", {}).get("restarts") == 1, 10, "the state file to count it")
        rows = process_rows(read_state(tmp_path / "run" / "state.json"), time.time())
    assert rows == [{"process": "sleeper", "stage": "deliver:email", "state": "running",
                     "pid": child.process.pid, "uptime_s": rows[0]["uptime_s"], "restarts": 1,  # type: ignore[union-attr]
                     "last_exit": -signal.SIGKILL}]
    assert rows[0]["uptime_s"] is not None and 0 <= rows[0]["uptime_s"] < 10


RUN_SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    from pathlib import Path
    from herald.infra.supervisor import ProcessSpec, Supervisor, SupervisorConfig
    home = Path(sys.argv[1])
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = SupervisorConfig(log_dir=home / "logs", state_path=home / "state.json", stop_timeout_s=5.0)
    Supervisor(config, [ProcessSpec(f"s{n}", sleeper) for n in range(3)], os.environ, print).run(stop)
""")


def test_a_run_is_stopped_from_another_process_leaving_none_of_its_processes(tmp_path: Path) -> None:
    runner = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(live_pids(read_state(tmp_path / "state.json"))) == 4, 20, "the run")
        pids = live_pids(read_state(tmp_path / "state.json"))
        assert pids["supervisor"] == runner.pid
        stopped = stop_run(tmp_path / "state.json", timeout_s=10.0)
        assert sorted(stopped) == ["s0", "s1", "s2", "supervisor"]
        runner.wait(timeout=10)
        assert not any(pid_alive(pid) for pid in pids.values())
        assert live_pids(read_state(tmp_path / "state.json")) == {}
        assert stop_run(tmp_path / "state.json", timeout_s=1.0) == []  # nothing left to stop
    finally:
        if runner.poll() is None:
            runner.kill()


def test_an_exited_process_its_parent_has_not_collected_counts_as_gone() -> None:
    """`herald down` waits on a supervisor it did not start: once that exits, it is a zombie
    until its own parent collects it, and must not be waited on (or killed) forever."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        print(child.pid, flush=True)
        time.sleep(30)  # never collects it
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        wait_until(lambda: not pid_alive(zombie), 10, "the child to exit")
        assert Path(f"/proc/{zombie}").exists()  # still in the process table, uncollected
        assert seconds_to_terminate(zombie) == 0.0
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()  # type: ignore[union-attr]


def seconds_to_terminate(pid: int) -> float:
    """How long `terminate` takes on `pid`, to the second."""
    began = time.monotonic()
    terminate(pid, Deadline(5))
    return round(time.monotonic() - began, 0)
