"""The faults `herald demo` injects unless told not to: what the seeds' operators fought by hand.

Every provider answers 10 % of requests with 503 (retried through the retry tiers), and
when a third of the WhatsApp e-tickets are out, the demo session reconnects on the second
gateway instance and the first one is killed with SIGKILL (seed 002's instance crash). It
comes back without its sessions (seed 004), losing a second, idle session: the session
reconciler finds it missing, marks it disconnected and asks the gateway to reconnect it.
The demo's processes retry faster than the defaults (tiers from 0.5 s, delays of at most
5 s) and give sessions a 5 s grace period, so the run stays short.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.deadline import wait_until
from herald.infra.processes import ProcessGroup
from herald.infra.settings import Settings
from herald.proving.catalogs import with_retries, write_catalog
from herald.proving.simulators.network import SimulatorNetwork
from herald.schemas.headers import iso
from herald.schemas.tables import MessagingSession

DEMO_SESSION = "demo-wa"
IDLE_SESSION = "demo-wa-idle"  # lost by the restarted gateway
TRANSIENT_FAILURE_RATE = 0.1
DEMO_RETRIES = {"tiers": [0.5, 2.0, 10.0], "base": 0.5, "cap": 5.0}
DEMO_SESSION_CHECKS = {"session_grace_s": 5.0, "session_resync_interval_s": 1.0}
GATEWAY_REPORT_INTERVAL_S = 1.0


@dataclass
class FaultReport:
    transient_failure_rate: float = TRANSIENT_FAILURE_RATE
    crashed_instance: str = ""  # names, as the simulators report themselves
    moved_to: str = ""
    moved_to_url: str = ""
    provider_failures: int = 0  # answered 503 or refused, then retried
    declared_instance: str | None = None  # the database's, after the run
    restarted_at: str = "~"  # ISO 8601: when the crashed instance was restarted ("~" sorts last)
    idle_session: dict[str, str] | None = None  # status and audit metadata, after the run

    @property
    def idle_session_recovered(self) -> bool:
        """Disconnected and asked to reconnect by this run (an earlier run's metadata remains)."""
        idle = self.idle_session or {}
        return (idle.get("status") == "disconnected"
                and idle.get("auto_disconnected_at", "") > self.restarted_at
                and idle.get("auto_reconnect_at", "") >= idle["auto_disconnected_at"])

    def rows(self) -> list[tuple[str, str]]:
        corrected = ("yes" if self.declared_instance == self.moved_to_url
                     else f"no ({self.declared_instance})")
        idle = self.idle_session or {}
        recovered = (f"yes (reconnect asked at {idle['auto_reconnect_at']})" if self.idle_session_recovered
                     else f"no ({idle})")
        return [("injected: transient provider failures", f"{self.transient_failure_rate:.0%} of requests"),
                ("provider failures, retried through the retry tiers", str(self.provider_failures)),
                ("injected: gateway instance crash (kill -9)", f"{self.crashed_instance}, with "
                                                               f"{DEMO_SESSION} moved to {self.moved_to}"),
                ("database corrected to the new instance (via the outbox)", corrected),
                ("injected: crashed instance restarted without its sessions",
                 f"{self.crashed_instance}, losing {IDLE_SESSION}"),
                (f"{IDLE_SESSION} marked disconnected, reconnect requested", recovered)]


def with_demo_retries(settings: Settings, example: str = "registrations") -> Settings:
    """The example's catalog with the demo's faster retries, written under the run's home."""
    path = write_catalog(settings.home / "demo" / f"{example}-catalog.yaml", example,
                         with_retries(**DEMO_RETRIES))
    return dataclasses.replace(settings, catalog=path, **DEMO_SESSION_CHECKS)


def demo_faults(count: int, report: FaultReport) -> Callable[[ProcessGroup, SimulatorNetwork], None]:
    """The injector `run_pipeline` runs beside the writers."""
    def inject(group: ProcessGroup, network: SimulatorNetwork) -> None:
        for url in network.urls().values():
            network.faults(url, error_rate=TRANSIENT_FAILURE_RATE, status=503)
        wait_until(lambda: network.accepted("whatsapp") >= count // 3, 300,
                   "a third of the WhatsApp e-tickets")
        crashed, survivor = network.instance_name(0), network.instance_name(1)
        network.place_session(network.whatsapp[1], DEMO_SESSION)  # the session reconnected there ...
        group.kill(f"simulator-{crashed}")  # ... and its first instance crashes
        report.crashed_instance, report.moved_to, report.moved_to_url = crashed, survivor, network.whatsapp[1]
        # Taken before the restart: the instance reports at once, and the reconciler may mark the
        # idle session disconnected before `restart` returns (seen in a fresh-clone run).
        report.restarted_at = iso(datetime.now(UTC))
        network.restart(group, crashed, forget_sessions=True)
        network.faults(network.whatsapp[0], error_rate=TRANSIENT_FAILURE_RATE, status=503)
    return inject


def finish_report(report: FaultReport, network_stats: list[dict[str, int]], database_url: str,
                  wait_s: float = 30.0) -> None:
    """Counts from the simulators; the sessions' declared states once the corrections arrived
    (bounded)."""
    report.provider_failures = sum(int(stats["rejected"]) for stats in network_stats)
    engine = sa.create_engine(database_url)
    give_up = time.monotonic() + wait_s
    try:
        while True:
            with Session(engine) as session:
                row = session.get(MessagingSession, DEMO_SESSION)
                report.declared_instance = row.gateway_instance if row is not None else None
                idle = session.get(MessagingSession, IDLE_SESSION)
                report.idle_session = {"status": idle.status, **idle.metadata_} if idle is not None else None
            done = report.declared_instance == report.moved_to_url and report.idle_session_recovered
            if done or time.monotonic() > give_up:
                return
            time.sleep(0.2)
    finally:
        engine.dispose()
