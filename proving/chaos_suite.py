"""`herald chaos`: the scenarios in order, one JSON line each, then a table with the verdicts.

Most run on the embedded default (or the configured services); the broker-of-three one
starts a cluster of three brokers of its own beside it (same jars, same database) and
stops it afterwards. A scenario that must stop a service is skipped, saying why, when that
service is configured rather than embedded: Herald does not stop what it did not start.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from herald.infra.catalogs import open_catalog
from herald.infra.progress import ProgressReporter
from herald.infra.services import Endpoints, start_services, stop_services
from herald.infra.settings import Settings
from herald.ops.bootstrap import prepare
from herald.proving.catalogs import with_retries, write_catalog
from herald.proving.chaos import CHAOS_RETRIES, ChaosPlan, Outcome, run_scenario
from herald.proving.chaos_faults import SCENARIOS, Scenario
from herald.proving.demo_faults import DEMO_SESSION_CHECKS
from herald.schemas.catalog_model import Catalog

CLUSTER_HOME = "chaos-cluster"  # under HERALD_HOME: the three brokers' own directory


def chaos_settings(settings: Settings) -> Settings:
    """Fast retries that outlast the outages, and the demo's quick session checks."""
    path = write_catalog(settings.home / "chaos" / "registrations-catalog.yaml", "registrations",
                         with_retries(**CHAOS_RETRIES))
    return dataclasses.replace(settings, catalog=path, **DEMO_SESSION_CHECKS)


def skip_reason(scenario: Scenario, settings: Settings) -> str:
    if scenario.stops == "kafka" and settings.kafka_bootstrap is not None:
        return "needs the embedded Kafka (HERALD_KAFKA_BOOTSTRAP points elsewhere)"
    if scenario.stops == "postgres" and settings.database_url is not None:
        return "needs the embedded PostgreSQL (HERALD_DATABASE_URL points elsewhere)"
    return ""


def run_chaos(settings: Settings, names: list[str], plan: ChaosPlan,
              report: Callable[[Outcome], None]) -> list[Outcome]:
    """Each named scenario in turn; `report` hears of each outcome as soon as it is counted."""
    settings = chaos_settings(settings)
    outcomes = []
    endpoints, started = start_services(settings)
    try:
        catalog = open_catalog(settings.catalog, os.environ)
        prepare(settings, catalog)
        progress = ProgressReporter("chaos")
        for number, name in enumerate(names, 1):
            with progress.phase(f"scenario {number} of {len(names)}: {name}"):
                outcome = _outcome(SCENARIOS[name], settings, catalog, endpoints, plan)
            report(outcome)
            outcomes.append(outcome)
    finally:
        stop_services(settings, only=started)
    return outcomes


def _outcome(scenario: Scenario, settings: Settings, catalog: Catalog, endpoints: Endpoints,
             plan: ChaosPlan) -> Outcome:
    reason = skip_reason(scenario, settings)
    if reason:
        return Outcome(scenario.name, 0, 0, 0, 0, None, {"skipped": reason})
    if scenario.needs_cluster:
        return _on_cluster(scenario, settings, catalog, endpoints, plan)
    return _run(scenario, settings, catalog, endpoints, plan)


def _run(scenario: Scenario, settings: Settings, catalog: Catalog, endpoints: Endpoints,
         plan: ChaosPlan) -> Outcome:
    fault_s = plan.outage_s if scenario.long_fault else 0.0
    return run_scenario(scenario.name, scenario.inject, settings, catalog, endpoints, plan, fault_s)


def _on_cluster(scenario: Scenario, settings: Settings, catalog: Catalog, endpoints: Endpoints,
                plan: ChaosPlan) -> Outcome:
    """Three brokers of the scenario's own (the jars from the same Maven cache), the same database."""
    cluster = dataclasses.replace(settings, home=settings.home / CLUSTER_HOME, kafka_brokers=3,
                                  maven_repo=settings.maven_repo or settings.home / "m2",
                                  database_url=endpoints.database_url)
    cluster_endpoints, started = start_services(cluster)
    try:
        prepare(cluster, catalog)  # the same catalog: only the brokers differ
        return _run(scenario, cluster, catalog, cluster_endpoints, plan)
    finally:
        stop_services(cluster, only=started)


def print_table(outcomes: list[Outcome], plan: ChaosPlan) -> None:
    """The verdicts, then what each scenario did (a legend keeps the table narrow in a log)."""
    table = Table("scenario", "written", "delivered", "lost", "duplicated", "recovery", "verdict",
                  title=f"Herald chaos: counted at the provider simulators ({plan.rate:g} registrations/s, "
                        f"outages of {plan.outage_s:g} s)")
    for outcome in outcomes:
        skipped = outcome.extra.get("skipped")
        missed = outcome.shortfalls()
        verdict = f"skipped: {skipped}" if skipped else ("goal met" if not missed else "; ".join(missed))
        recovery = "-" if outcome.recovery_s is None else f"{outcome.recovery_s:.1f} s"
        table.add_row(outcome.scenario, str(outcome.written), str(outcome.delivered), str(outcome.lost),
                      str(outcome.duplicated), recovery, verdict)
    console = Console(width=None if Console().is_terminal else 120)
    console.print(table)
    for outcome in outcomes:
        console.print(f"  {outcome.scenario}: {SCENARIOS[outcome.scenario].fault}", highlight=False)


def failed(outcomes: list[Outcome]) -> bool:
    """Anything lost or doubled, or a run cut short: what `herald chaos` exits 1 for."""
    return any(o.lost or o.duplicated or o.error for o in outcomes)
