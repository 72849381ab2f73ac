"""docs/running.md's "Running the stages yourself", run as written, in one shell, on an embedded stack of
its own: start every stage, post an event with the signing example, read its count with the
analysts' consumer, then stop the processes and the services. The next drift fails here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from herald.infra.processes import port_is_free
from tests.doc_blocks import ROOT, blocks
from tests.support import HERALD, wait_until

DOCUMENTED_PORTS = (18081, 18082, 18083, 8090, 8095)
STOP_BOUND_S = 25.0  # every stage stopped, then Kafka and PostgreSQL


class Shell:
    """One bash reading commands as a user types them; its jobs and output are its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._output = log.open("w")
        self._process = subprocess.Popen(["bash"], stdin=subprocess.PIPE, stdout=self._output,
                                         stderr=subprocess.STDOUT, cwd=ROOT, env=env, text=True,
                                         start_new_session=True)

    def run(self, script: str, timeout_s: float) -> str:
        """Run `script`; returns what the shell wrote meanwhile, once the script is done."""
        marker = f"--- done {time.monotonic_ns()}"
        before = len(self.log.read_text())
        assert self._process.stdin is not None
        self._process.stdin.write(f"{script}\necho '{marker}'\n")
        self._process.stdin.flush()
        wait_until(lambda: marker in self.log.read_text()[before:], timeout_s, f"the shell to run:\n{script}")
        return self.log.read_text()[before:]

    def close(self) -> None:
        """End the shell, and whatever it left running (a failed test's background jobs)."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._output.close()


def status(env: dict[str, str]) -> dict:
    result = subprocess.run([*HERALD, "status", "--json"], env=env, capture_output=True, text=True,
                            timeout=120)
    return json.loads(result.stdout)


def test_running_the_stages_yourself_as_the_docs_say(base_settings, tmp_path):
    taken = [port for port in DOCUMENTED_PORTS if not port_is_free(port)]
    if taken:
        pytest.fail(f"the documented ports {taken} are taken on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(HERALD_HOME=str(tmp_path / "home"), HERALD_MAVEN_REPO=str(base_settings.home / "m2"),
               HERALD_KAFKA_HEAP_MB="384")
    start, stop = blocks("docs/running.md", "## Each stage in its own process", "sh")
    (signing,) = blocks("docs/upstream.md", "**Over HTTP.**", "sh")
    (analysts,) = blocks("docs/analysts.md", "# For analysts", "python")
    shell = Shell(env, tmp_path / "shell.log")
    try:
        shell.run(start, 300)
        wait_until(lambda: {s["state"] for s in status(env)["stages"]} == {"running"}, 120,
                   "every stage running, as `herald status` shows it")
        answer = shell.run(signing, 60)
        assert "-> 202" in answer and '"key":"REG-1"' in answer, answer
        wait_until(lambda: httpx.get("http://127.0.0.1:18082/_sim/stats").json()["accepted"] == 1, 60,
                   "the e-ticket e-mail at the email simulator")
        bootstrap = subprocess.run([*HERALD, "status", "--kafka"], env=env, capture_output=True, text=True,
                                   timeout=60, check=True).stdout.strip()

        registry = subprocess.run([*HERALD, "status", "--registry"], env=env, capture_output=True, text=True,
                                  timeout=60, check=True).stdout.strip()

        def counted() -> bool:
            printed = subprocess.run([sys.executable, "-c", analysts], cwd=ROOT, capture_output=True,
                                     text=True, timeout=60, env={**env, "KAFKA_BOOTSTRAP": bootstrap,
                                                      "SCHEMA_REGISTRY_URL": registry}).stdout
            rows = [line.split()[1:] for line in printed.splitlines()]
            return ["e_ticket", "email", "sent", "1"] in rows

        wait_until(counted, 60, "the analysts' consumer to print the e-mail's count")
        health = subprocess.run([*HERALD, "health"], env=env, capture_output=True, text=True, timeout=120)
        assert health.returncode == 0, health.stdout
        began = time.monotonic()
        stopped = shell.run(stop, 120)
        assert "stopped: schema registry, kafka, postgres" in stopped, stopped
        # `kill $(jobs -p); wait` is SIGTERM to every stage with Kafka up (test_shutdown.py: down).
        took_s = time.monotonic() - began
        assert took_s < STOP_BOUND_S, f"the stop block took {took_s:.0f} s"
        said = shell.log.read_text()
        for stage in ("relay", "ingest", "api", "streams router", "streams missing", "streams sessions",
                      "streams status", "deliver whatsapp", "deliver email", "corrections", "dlq index",
                      "history index"):
            assert f"{stage} starting (herald" in said and f"{stage} stopped" in said, stage
    finally:
        shell.close()
        subprocess.run([*HERALD, "down"], env=env, capture_output=True, timeout=120)
    assert status(env)["services"][0]["state"] == "stopped"
