"""The simulated providers of one run: several WhatsApp gateway instances and an email provider.

Each is its own process, so a test or the demo can kill one with SIGKILL and start it
again. The gateway instances share one message store (a network), and each keeps its
sessions in a file of its own, so a restarted instance comes back with them, or without
them when restarted with `forget_sessions`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herald.infra.deadline import Deadline
from herald.infra.processes import ProcessGroup, ServiceError, free_port
from herald.ops.launch import HERALD_ARGV


@dataclass(frozen=True)
class SimulatorNetwork:
    run_dir: Path
    whatsapp: tuple[str, ...]  # gateway instance base URLs, in order: wa-1, wa-2, ...
    email: str
    report_interval_s: float = 0.0  # gateway instances report their sessions this often; 0: never

    @classmethod
    def plan(cls, run_dir: Path, gateway_instances: int = 2,
             report_interval_s: float = 0.0) -> SimulatorNetwork:
        return cls(run_dir, tuple(f"http://127.0.0.1:{free_port()}" for _ in range(gateway_instances)),
                   f"http://127.0.0.1:{free_port()}", report_interval_s)

    def urls(self) -> dict[str, str]:
        """Process name -> URL of every simulator."""
        return {**{self.instance_name(i): url for i, url in enumerate(self.whatsapp)},
                "email": self.email}

    @staticmethod
    def instance_name(index: int) -> str:
        return f"wa-{index + 1}"

    def argv(self, name: str, forget_sessions: bool = False) -> list[str]:
        url = self.urls()[name]
        kind = "email" if name == "email" else "whatsapp"
        argv = [*HERALD_ARGV, "simulator", "--kind", kind, "--port", url.rsplit(":", 1)[1],
                "--name", name, "--store", str(self.run_dir / f"{kind}.sqlite")]
        if kind == "whatsapp":
            argv += ["--sessions-file", str(self.run_dir / f"{name}.sessions.json")]
            if self.report_interval_s > 0:
                argv += ["--report-interval-s", str(self.report_interval_s), "--advertised-url", url]
        if forget_sessions:
            argv.append("--forget-sessions")
        return argv

    def start(self, group: ProcessGroup) -> None:
        """Every simulator as a process of `group`; returns once each answers."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in self.urls():
            group.start(f"simulator-{name}", self.argv(name))
        for url in self.urls().values():
            wait_for_http(f"{url}/_sim/stats", Deadline(30), group)

    def restart(self, group: ProcessGroup, name: str, forget_sessions: bool = False) -> None:
        group.start(f"simulator-{name}", self.argv(name, forget_sessions))
        wait_for_http(f"{self.urls()[name]}/_sim/stats", Deadline(30), group)

    def place_session(self, instance_url: str, session_id: str, status: str = "connected") -> None:
        httpx.put(f"{instance_url}/_sim/sessions/{session_id}", json={"status": status},
                  timeout=10).raise_for_status()

    def session_status(self, instance_url: str, session_id: str) -> str | None:
        """The session's status on that instance, None when it does not hold it."""
        answer = httpx.get(f"{instance_url}/sessions/{session_id}", timeout=10)
        return None if answer.status_code == 404 else str(answer.raise_for_status().json()["status"])

    def remove_session(self, instance_url: str, session_id: str) -> None:
        httpx.delete(f"{instance_url}/_sim/sessions/{session_id}", timeout=10).raise_for_status()

    def faults(self, url: str, **faults: Any) -> None:
        httpx.post(f"{url}/_sim/faults", json=faults, timeout=10).raise_for_status()

    def stats(self, channel: str) -> dict[str, Any]:
        """What the channel's network accepted (any instance that still answers reads the store)."""
        return dict(self._ask(channel, "/_sim/stats"))

    def accepted(self, channel: str) -> int:
        """How many messages the channel's network accepted (cheap: for polling)."""
        return int(self._ask(channel, "/_sim/accepted")["accepted"])

    def messages(self, channel: str) -> list[dict[str, Any]]:
        return list(self._ask(channel, "/_sim/messages"))

    def _ask(self, channel: str, path: str) -> Any:
        """The first answer from the channel's simulators: a crashed instance is skipped."""
        for url in self.whatsapp if channel == "whatsapp" else (self.email,):
            try:
                return httpx.get(f"{url}{path}", timeout=30).json()
            except httpx.TransportError:
                continue
        raise ServiceError(f"no {channel} simulator answers")


def wait_for_http(url: str, deadline: Deadline, group: ProcessGroup) -> None:
    while True:
        group.check_alive()
        try:
            httpx.get(url, timeout=1.0).raise_for_status()
            return
        except httpx.HTTPError:
            if deadline.expired():
                raise ServiceError(f"{url} did not answer in time") from None
            time.sleep(0.2)
