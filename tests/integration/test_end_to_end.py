"""The whole pipeline as separate processes: every verified registration gets exactly one
e-ticket per channel at the provider, also when workers are killed with SIGKILL mid-run; and
every stage then catches up (its groups at lag 0), so health at the end is not a failure."""

from __future__ import annotations

import os
import signal

from herald.infra.catalogs import open_catalog
from herald.infra.processes import ProcessGroup
from herald.infra.services import Endpoints
from herald.proving.demo import run_pipeline
from herald.proving.demo_faults import FaultReport, demo_faults, with_demo_retries
from herald.proving.simulators.network import SimulatorNetwork
from tests.catalogs import example
from tests.support import HERALD, wait_until


def endpoints_of(settings) -> Endpoints:
    return Endpoints(settings.kafka_bootstrap, settings.database_url, settings.schema_registry_url)


def test_every_verified_registration_gets_one_e_ticket_per_channel(settings):
    result = run_pipeline(settings, example(), endpoints_of(settings), 300, timeout_s=180)
    assert result.delivered == {"whatsapp": 300, "email": 300}
    assert (result.lost, result.duplicates) == (0, 0)
    assert result.published_events == result.written_events == 900
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.caught_up_s is not None, f"stages still behind: {result.behind}"
    assert not result.health.startswith("fail"), result.health


def kill_and_restart(group: ProcessGroup, name: str, argv: list[str]) -> None:
    victim = group.processes[name]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    group.start(name, argv)


def test_kill_9_of_router_and_delivery_worker_mid_run(settings):
    def fault(group: ProcessGroup, network: SimulatorNetwork) -> None:
        wait_until(lambda: network.accepted("email") >= 50, 120, "e-mails to be under way")
        kill_and_restart(group, "streams", [*HERALD, "streams"])
        kill_and_restart(group, "deliver-email", [*HERALD, "deliver", "--channel", "email"])

    result = run_pipeline(settings, example(), endpoints_of(settings), 600, timeout_s=240, inject_fault=fault)
    assert result.delivered == {"whatsapp": 600, "email": 600}
    assert (result.lost, result.duplicates) == (0, 0)
    assert result.caught_up_s is not None, f"stages still behind after the kills: {result.behind}"


def test_the_demos_faults_lose_and_double_nothing(settings):
    """10 % transient failures at every provider and a gateway instance crash mid-run; the
    instance comes back without its sessions and the session reconciler handles the lost one."""
    report = FaultReport()
    configured = with_demo_retries(settings)
    result = run_pipeline(configured, open_catalog(configured.catalog, {}), endpoints_of(settings), 300,
                          timeout_s=240, inject_fault=demo_faults(300, report), faults=report)
    assert result.delivered == {"whatsapp": 300, "email": 300}
    assert (result.lost, result.duplicates) == (0, 0)
    assert report.provider_failures > 0, "the faults must have bitten to mean anything"
    assert report.crashed_instance == "wa-1" and report.declared_instance == report.moved_to_url
    assert report.idle_session_recovered, f"the lost idle session: {report.idle_session}"
