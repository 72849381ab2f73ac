"""`herald chaos`: each scenario runs the whole pipeline under load, injects one fault and
counts, at the provider simulators, what was lost and what was doubled.

A scenario writes registrations at a steady rate (each verified payment owes one e-ticket
per channel), lets the pipeline settle, injects its fault, clears it, keeps writing a while,
then waits until every e-ticket arrived or the wait runs out. The counts come from the
simulators' own stores, never from what the workers believe:

- written: e-tickets owed (registrations x channels); delivered: distinct ones received;
- lost: owed but never received (plus poison records that reached no DLQ);
- duplicated: the same person receiving the same e-ticket again;
- recovery_s: from the moment the fault cleared until the last late e-ticket arrived (more
  than 3 s after its payment was verified: the backlog, and whatever the fault still held
  up), None when one never arrived.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from herald.infra.deadline import Deadline
from herald.infra.processes import ProcessGroup, ServiceError
from herald.infra.services import Endpoints
from herald.infra.settings import Settings
from herald.proving.chaos_writer import write_durably
from herald.proving.demo import (
    CHANNELS,
    create_example_tables,
    database_counts,
    open_demo_sessions,
    pipeline_env,
    start_pipeline,
)
from herald.proving.demo_faults import GATEWAY_REPORT_INTERVAL_S
from herald.proving.simulators.network import SimulatorNetwork
from herald.proving.simulators.store import MessageStore
from herald.schemas.catalog_model import Catalog

GOAL_RECOVERY_S = 10.0
LATE_S = 3.0  # slower than this after its payment, an e-ticket is late (the demo's burst: p99 < 1 s)
# Retries as fast as the demo's, but patient enough to outlast a 60 s outage: the delay is
# capped at 5 s, so a provider back is tried again within 5 s (the defaults cap at minutes).
CHAOS_RETRIES = {"tiers": [0.5, 2.0], "base": 0.5, "cap": 5.0, "max_attempts": 100}


@dataclass(frozen=True)
class ChaosPlan:
    rate: float = 20.0  # registrations per second, all through the run
    warmup_s: float = 10.0  # load before the fault
    outage_s: float = 60.0  # how long the long faults last (broker, provider)
    cooldown_s: float = 15.0  # load after the fault cleared
    drain_s: float = 120.0  # then at most this long for the last e-tickets

    def registrations(self, fault_s: float) -> int:
        return int(self.rate * (self.warmup_s + fault_s + self.cooldown_s))


@dataclass
class ChaosRun:
    """What a scenario's injector works with, and the marks it leaves."""
    settings: Settings
    endpoints: Endpoints
    group: ProcessGroup
    network: SimulatorNetwork
    plan: ChaosPlan
    prefix: str  # of this run's registration ids
    started: float = field(default_factory=time.monotonic)
    cleared_at_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific counts

    def after_warmup(self) -> None:
        """Until the warm-up is over and e-tickets are flowing on every channel."""
        while time.monotonic() - self.started < self.plan.warmup_s or \
                min(len(delivered(self.network, c, self.prefix)) for c in CHANNELS) == 0:
            self.group.check_alive()
            time.sleep(0.2)

    def cleared(self) -> None:
        self.cleared_at_ms = time.time() * 1000


Injector = Callable[[ChaosRun], None]


@dataclass
class Outcome:
    scenario: str
    written: int
    delivered: int
    lost: int
    duplicated: int
    recovery_s: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # what stopped the run early, if anything

    def json_line(self) -> str:
        recovery = None if self.recovery_s is None else round(self.recovery_s, 1)
        return json.dumps({"scenario": self.scenario, "written": self.written, "delivered": self.delivered,
                           "lost": self.lost, "duplicated": self.duplicated, "recovery_s": recovery,
                           **self.extra, **({"error": self.error} if self.error else {})})

    def shortfalls(self) -> list[str]:
        """Where the run missed the goal (0 lost, 0 duplicated, recovery <= 10 s); empty: met."""
        missed = [f"{self.lost} lost"] if self.lost else []
        missed += [f"{self.duplicated} duplicated"] if self.duplicated else []
        if self.recovery_s is None:
            missed.append("never recovered")
        elif self.recovery_s > GOAL_RECOVERY_S:
            missed.append(f"recovery {self.recovery_s:.1f} s > {GOAL_RECOVERY_S:.0f} s")
        return missed + ([self.error] if self.error else [])


def delivered(network: SimulatorNetwork, channel: str, prefix: str) -> list[dict[str, Any]]:
    """This run's e-tickets a channel's providers accepted, read from their store (it outlives
    a crashed or stopped simulator)."""
    store = MessageStore(network.run_dir / f"{channel}.sqlite")
    return [m for m in store.messages()
            if m["subject_id"].startswith(prefix) and m["template"] == "e_ticket"]


def run_scenario(name: str, inject: Injector, settings: Settings, catalog: Catalog, endpoints: Endpoints,
                 plan: ChaosPlan, fault_s: float) -> Outcome:
    """The pipeline as processes, `plan.registrations(fault_s)` written at `plan.rate` while
    `inject` runs beside the writers; counted once every e-ticket arrived or the wait ran out."""
    run_id = uuid.uuid4().hex[:8]
    run_dir = settings.home / "chaos" / f"{name}-{run_id}"
    network = SimulatorNetwork.plan(run_dir / "simulators", report_interval_s=GATEWAY_REPORT_INTERVAL_S)
    count = plan.registrations(fault_s)
    with ProcessGroup(run_dir, pipeline_env(settings, endpoints, network)) as group, \
            ThreadPoolExecutor(2) as threads:
        network.start(group)
        create_example_tables(endpoints.database_url)
        open_demo_sessions(endpoints.database_url, network)
        start_pipeline(group, settings, catalog, endpoints.kafka_bootstrap)
        run = ChaosRun(settings, endpoints, group, network, plan, prefix=f"REG-{run_id}-")
        writing = threads.submit(write_durably, endpoints.database_url, run_id, count, plan.rate)
        fault = threads.submit(inject, run)
        error = _first_error(fault, writing, Deadline(plan.warmup_s + fault_s + plan.drain_s * 2))
        if not error:
            run.extra["writer_retries"] = writing.result().retries
            error = _wait_for_deliveries(run, count, Deadline(plan.cooldown_s + plan.drain_s))
        time.sleep(2.0)  # a late repeat must be counted as duplicated
        outcome = count_outcome(name, run, count)
    outcome.error = error
    return outcome


def _first_error(fault: Any, writing: Any, deadline: Deadline) -> str:
    """Wait for the injector, then the writers; what went wrong, or ""."""
    for task, what in ((fault, "the fault injector"), (writing, "the writers")):
        try:
            task.result(timeout=max(1.0, deadline.remaining()))
        except TimeoutError:
            return f"{what} did not finish in time"
        except Exception as exc:  # reported beside the counts: the other scenarios still run
            return f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ""


def _wait_for_deliveries(run: ChaosRun, count: int, deadline: Deadline) -> str:
    while not deadline.expired():
        try:
            run.group.check_alive()
        except ServiceError as exc:
            return str(exc).splitlines()[0]  # a stage crashed: what it received so far is counted
        if all(len({m["subject_id"] for m in delivered(run.network, c, run.prefix)}) >= count
               for c in CHANNELS):
            return ""
        time.sleep(0.5)
    return ""  # what never arrived is counted as lost


def count_outcome(name: str, run: ChaosRun, count: int) -> Outcome:
    """Owed, received, lost, doubled and the recovery time, from the simulators and the database."""
    first_accepted: dict[tuple[str, str], float] = {}
    duplicated = 0
    for channel in CHANNELS:
        per_person: dict[tuple[str, str], int] = {}
        for message in delivered(run.network, channel, run.prefix):
            pair = (message["subject_id"], channel)
            first_accepted.setdefault(pair, message["accepted_at_ms"])  # read in accepted order
            person = (message["subject_id"], message["to"])
            per_person[person] = per_person.get(person, 0) + 1
        duplicated += sum(n - 1 for n in per_person.values())
    written = count * len(CHANNELS)
    lost = written - len(first_accepted) + int(run.extra.get("poison_unaccounted", 0))
    verified = database_counts(run.endpoints.database_url, run.prefix).committed_ms
    return Outcome(name, written, len(first_accepted), lost, duplicated,
                   recovery_seconds(verified, first_accepted, run.cleared_at_ms), run.extra)


def recovery_seconds(verified_ms: dict[str, float], first_accepted_ms: dict[tuple[str, str], float],
                     cleared_at_ms: float | None, late_s: float = LATE_S) -> float | None:
    """Seconds from the fault clearing until the last late e-ticket arrived (None: one never did).

    Late: accepted more than `late_s` after its payment was verified. So the backlog owed at
    the clear counts, and so do e-tickets verified after it that still waited (the partitions
    of a killed worker until the session timeout hands them over)."""
    if cleared_at_ms is None:
        return None
    owed = [(at, first_accepted_ms.get((rid, channel))) for rid, at in verified_ms.items()
            for channel in CHANNELS]
    if any(arrived is None for _at, arrived in owed):
        return None
    late = [arrived for at, arrived in owed if arrived is not None and arrived - at > late_s * 1000]
    return max(0.0, (max(late, default=cleared_at_ms) - cleared_at_ms) / 1000)
