"""The SMTP sink and the webhook receiver as processes of a run (`herald simulator --kind
smtp|webhook`), with the calls a test, the demo or the bench makes to them: faults, endpoints,
what they received. A process of its own, so it can be killed with SIGKILL and started again
on the same store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herald.infra.deadline import Deadline
from herald.infra.processes import ProcessGroup, free_port
from herald.ops.launch import HERALD_ARGV
from herald.proving.simulators.network import wait_for_http

SMTP_HOST_VARIABLE = "SMTP_HOST"  # as the tasks example's catalog reads them
SMTP_PORT_VARIABLE = "SMTP_PORT"


@dataclass(frozen=True)
class ReceiverProcess:
    """One simulator process: `control` is its control API's base URL."""

    kind: str  # smtp or webhook
    run_dir: Path
    control: str
    smtp_port: int = 0

    @classmethod
    def plan(cls, kind: str, run_dir: Path) -> ReceiverProcess:
        return cls(kind, run_dir, f"http://127.0.0.1:{free_port()}", free_port() if kind == "smtp" else 0)

    @property
    def name(self) -> str:
        return f"simulator-{self.kind}"

    def argv(self) -> list[str]:
        argv = [*HERALD_ARGV, "simulator", "--kind", self.kind, "--port", self.control.rsplit(":", 1)[1],
                "--store", str(self.run_dir / f"{self.kind}.sqlite")]
        return [*argv, "--smtp-port", str(self.smtp_port)] if self.smtp_port else argv

    def start(self, group: ProcessGroup) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        group.start(self.name, self.argv())
        wait_for_http(f"{self.control}/_sim/stats", Deadline(30), group)

    def environ(self) -> dict[str, str]:
        """What an example catalog reads this receiver's address from."""
        if self.kind == "smtp":
            return {SMTP_HOST_VARIABLE: "127.0.0.1", SMTP_PORT_VARIABLE: str(self.smtp_port)}
        return {}

    def endpoint(self, name: str, **behaviour: Any) -> str:
        """webhook: set up (or change) an endpoint; its URL."""
        self._call("PUT", f"/_sim/endpoints/{name}", behaviour)
        return self.endpoint_url(name)

    def endpoint_url(self, name: str) -> str:
        return f"{self.control}/hooks/{name}"

    def faults(self, **faults: Any) -> None:
        """smtp: how it refuses recipients from now on (see smtp_sink.SinkFaults)."""
        self._call("POST", "/_sim/faults", faults)

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sim/stats"))

    def accepted(self) -> int:
        return int(self._call("GET", "/_sim/accepted")["accepted"])

    def messages(self) -> list[dict[str, Any]]:
        """What it accepted: mails by Message-ID, or deliveries by webhook-id."""
        return list(self._call("GET", "/_sim/messages"))

    def attempts(self) -> list[dict[str, Any]]:
        """webhook: every attempt, with its time and answer."""
        return list(self._call("GET", "/_sim/attempts"))

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        answer = httpx.request(method, f"{self.control}{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()
