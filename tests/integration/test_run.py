"""`herald run` as docs/running.md shows it: the whole pipeline under one supervisor, processes
killed with SIGKILL again and again while registrations flow, and `herald down` leaving none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from herald.infra.deadline import Deadline
from herald.infra.processes import free_port, pid_alive
from herald.infra.settings import Settings
from herald.infra.supervisor import live_pids, read_state
from herald.proving.demo import (
    CHANNELS,
    open_demo_sessions,
    run_messages,
    wait_for_deliveries,
    wait_for_groups,
    write_registrations,
)
from herald.schemas.catalog import consumer_group, notification_topic, qualified
from tests.doc_blocks import blocks
from tests.integration.test_cli import herald
from tests.support import HERALD, process_env, simulator_network, wait_until

KILLED = ("deliver-email-1", "router")


def pipeline_groups(settings: Settings) -> list[str]:
    """The router's group and the delivery groups: ready before writes reach the pipeline promptly."""
    return [qualified(settings.streams_app_id, settings.namespace),
            *(consumer_group("deliver", notification_topic(c), settings.namespace) for c in CHANNELS)]
KILLS_EACH = 3
SECTION = "## The whole pipeline in one command"


def documented_commands(block: str) -> list[list[str]]:
    """Each `.venv/bin/herald ...` line of a block, as arguments, without its comment."""
    lines = [line for line in block.splitlines() if line.startswith(".venv/bin/herald ")]
    return [line.split("#", 1)[0].split()[1:] for line in lines]


def running(state_path: Path) -> dict[str, int]:
    return live_pids(read_state(state_path))


def e_tickets_sent(env: dict[str, str], registration: str) -> set[str]:
    """The channels `herald notifications show` says the registration's e-ticket was sent on,
    each story running from its request to its sending."""
    shown = herald("notifications", "show", registration, "--type", "e_ticket", "--json", env=env, timeout=60)
    stories = json.loads(shown.stdout) if shown.returncode == 0 else []
    return {s["channel"] for s in stories
            if (s["timeline"][0]["kind"], s["timeline"][-1]["kind"]) == ("requested", "sent")}


def every_process_runs(state_path: Path) -> bool:
    state = read_state(state_path)
    return bool(state) and len(live_pids(state)) == len(state["processes"]) + 1  # and the supervisor


def kill_and_wait_for_return(state_path: Path, name: str) -> None:
    pid = running(state_path)[name]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: running(state_path).get(name) not in (None, pid), 30, f"{name} to be started again")


def test_run_keeps_the_pipeline_alive_through_kills_and_down_leaves_no_process(settings, log_dir, tmp_path):
    start, check = blocks("docs/running.md", SECTION, "sh")
    (_up, run_args) = documented_commands(start)  # the suite's services stand in for `herald up`
    (status_args, down_args) = documented_commands(check)
    assert run_args == ["run", "--scale", "deliver:email=2"] and down_args == ["down"]
    home = tmp_path / "home"
    state_path = home / "run" / "state.json"
    with simulator_network(log_dir) as (network, simulators):
        open_demo_sessions(settings.database_url, network)
        env = {**process_env(settings, network), "HERALD_HOME": str(home),
               "HERALD_API_PORT": str(free_port())}
        with (log_dir / "herald-run.log").open("wb") as output:
            runner = subprocess.Popen([*HERALD, *run_args], env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: every_process_runs(state_path), 60, "every process of the run")
            wait_for_groups(settings.kafka_bootstrap, pipeline_groups(settings), Deadline(90), simulators)
            run_id = uuid.uuid4().hex[:8]
            with ThreadPoolExecutor(1) as writer:
                written = writer.submit(write_registrations, settings.database_url, run_id, 60, 10.0)
                for _ in range(KILLS_EACH):
                    for name in KILLED:
                        kill_and_wait_for_return(state_path, name)
                ids = written.result(timeout=120)
            wait_for_deliveries(network, f"REG-{run_id}", len(ids), Deadline(180), simulators)
            for channel in CHANNELS:
                subjects = [m["subject_id"] for m in run_messages(network, channel, f"REG-{run_id}")]
                assert sorted(subjects) == sorted(ids), f"{channel}: each e-ticket once, none lost"
            rows = {name: entry for name, entry in (read_state(state_path) or {})["processes"].items()}
            assert all(rows[name]["restarts"] == KILLS_EACH for name in KILLED), rows
            assert all(rows[name]["restarts"] == 0 for name in rows if name not in KILLED), rows
            wait_until(lambda: e_tickets_sent(env, ids[0]) == set(CHANNELS), 60, "its story in the history")
            shown = herald(*status_args, env=env, timeout=60).stdout
            assert all(name in shown for name in rows) and "restarts" in shown, shown
            pids = running(state_path)
            assert {"deliver-email-1", "deliver-email-2"} <= set(pids), pids
            down = herald(*down_args, env=env, timeout=60)
            assert down.returncode == 0, down.stderr
            assert "stopped the pipeline's processes" in down.stderr, down.stderr
            runner.wait(timeout=30)
            assert not [name for name, pid in pids.items() if pid_alive(pid)]
        finally:
            if runner.poll() is None:
                runner.send_signal(signal.SIGTERM)
                runner.wait(timeout=60)
