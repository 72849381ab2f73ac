"""Every long-running process stops on SIGTERM within a bounded time with Kafka down, by itself
(not by its exit deadline), and says when it started (what it consumes and produces, as which
group, which version) and when it stopped. With Kafka down, three Faust processes once took a
minute to exit. (With Kafka up, test_docs_run.py stops every stage as docs/running.md says.)"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from herald.infra.deadline import Deadline
from herald.infra.exit_deadline import EXIT_PAST_DEADLINE
from herald.infra.kafka_local import KafkaState
from herald.infra.logs import herald_version
from herald.infra.processes import ProcessGroup, free_port, tail
from herald.ops.pipeline import pipeline_stages
from herald.proving.demo import wait_for_groups
from herald.schemas.catalog import topic_catalog
from herald.schemas.migrations import scratch_database
from tests.catalogs import example
from tests.support import HERALD, process_env, provision

PROCESSES = {
    "relay": ["relay"], "ingest": ["ingest"], "api": ["api"], "router": ["streams"],
    "missing": ["streams", "--processor", "missing"], "sessions": ["streams", "--processor", "sessions"],
    "status": ["streams", "--processor", "status"], "deliver-whatsapp": ["deliver", "--channel", "whatsapp"],
    "deliver-email": ["deliver", "--channel", "email"], "corrections": ["corrections"],
    "dlq-index": ["dlq", "index"], "history-index": ["notifications", "index"],
}
BOUND_S = 15.0  # each must be gone by then; its exit deadline (shutdown_timeout_s) is later


def test_every_process_stops_within_a_bound_on_sigterm_with_kafka_down_and_logs_start_and_stop(
        base_settings, endpoints, private_broker, namespace, log_dir):
    """Kafka down; with it up, test_docs_run.py stops every stage the way docs/running.md says."""
    running = _every_process_running(base_settings, endpoints, private_broker, namespace, log_dir)
    with running as (_state, group):
        private_broker.stop()
        time.sleep(3)  # every client has noticed
        exits = _terminate_all(group)
    _assert_each_stopped_by_itself_within_the_bound(exits)
    for name in PROCESSES:
        log = group.log_path(name).read_text()
        started = f"starting (herald {herald_version()}, pid"
        assert started in log and "consumes" in log, tail(group.log_path(name))
        assert " stopped" in log, f"{name} wrote no stop line:\n{tail(group.log_path(name))}"
    for name in ("router", "status", "deliver-email", "corrections", "dlq-index", "history-index"):
        assert "partitions assigned" in group.log_path(name).read_text(), name


def test_every_process_stops_within_a_bound_on_sigterm_with_kafka_hung(
        base_settings, endpoints, private_broker, namespace, log_dir):
    """Kafka silent, not refusing (a partition, a frozen host): a Faust worker's consumer thread,
    which the interpreter joins at exit, once waited out aiokafka's requests to it."""
    running = _every_process_running(base_settings, endpoints, private_broker, namespace, log_dir)
    with running as (state, group):
        for pid in state.pids or (state.pid,):
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(3)
            exits = _terminate_all(group)
        finally:
            for pid in state.pids or (state.pid,):
                os.kill(pid, signal.SIGCONT)
    _assert_each_stopped_by_itself_within_the_bound(exits)


@contextlib.contextmanager
def _every_process_running(base_settings, endpoints, broker, namespace, log_dir) -> Iterator[
        tuple[KafkaState, ProcessGroup]]:
    """Every long-running process, each of its groups with its members, on a broker of its own."""
    state = broker.start()
    with scratch_database(endpoints.database_url, namespace) as url:
        provision(state.bootstrap, endpoints.schema_registry_url, topic_catalog(example(), namespace))
        settings = dataclasses.replace(base_settings, kafka_bootstrap=state.bootstrap, database_url=url,
                                       schema_registry_url=endpoints.schema_registry_url,
                                       namespace=namespace, api_port=free_port(), ingest_port=free_port(),
                                       ingest_secrets="s3cret", shutdown_timeout_s=2 * BOUND_S)
        stages = pipeline_stages(example(), namespace, settings.streams_app_id)
        groups = [g.group for stage in stages for g in stage.groups]
        with ProcessGroup(log_dir, process_env(settings)) as group:
            for name, argv in PROCESSES.items():
                group.start(name, [*HERALD, *argv])
            wait_for_groups(state.bootstrap, groups, Deadline(120), group)
            yield state, group


def _terminate_all(group: ProcessGroup) -> dict[str, tuple[float, int]]:
    for process in group.processes.values():
        os.kill(process.pid, signal.SIGTERM)
    return _wait_for_exits(group)


def _assert_each_stopped_by_itself_within_the_bound(exits: dict[str, tuple[float, int]]) -> None:
    late = {name: seconds for name, (seconds, _code) in exits.items() if seconds > BOUND_S}
    assert not late, f"still running {BOUND_S:.0f} s after SIGTERM: {late}"
    forced = [name for name, (_s, code) in exits.items() if code == EXIT_PAST_DEADLINE]
    assert not forced, f"stopped by their exit deadline, not by themselves: {forced}"


def _wait_for_exits(group: ProcessGroup) -> dict[str, tuple[float, int]]:
    """Each process's seconds from SIGTERM to exit and its status (waiting at most 3 bounds)."""
    started, exits = time.monotonic(), {}
    while len(exits) < len(group.processes) and time.monotonic() - started < 3 * BOUND_S:
        for name, process in group.processes.items():
            if name not in exits and process.poll() is not None:
                exits[name] = (time.monotonic() - started, process.returncode)
        time.sleep(0.05)
    return {name: exits.get(name, (float("inf"), 0)) for name in group.processes}


def test_a_process_that_does_not_stop_is_ended_by_its_exit_deadline():
    """What bounds a stop the stage's own code cannot: a wait that never returns."""
    script = ("import time; from herald.infra.exit_deadline import arm_exit_deadline; "
              "arm_exit_deadline(1.0, 'SIGTERM'); time.sleep(60)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_PAST_DEADLINE and time.monotonic() - started < 10
