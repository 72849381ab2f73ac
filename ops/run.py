"""`herald run`: every process the catalog's pipeline needs, supervised, in the foreground.

The stages come from `pipeline_stages` (the list health and status check), plus the ops API
and, when it has secrets to check signatures with, the HTTP ingest. `--scale STAGE=N` runs N
processes of a stage; each process is named after its stage (and its number), which is also
its instance id, so a restarted process rejoins its groups as the static member it was.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from herald.infra.services import resolve_endpoints
from herald.infra.settings import Settings, child_environ, env_name
from herald.infra.supervisor import Echo, ProcessSpec, Supervisor, SupervisorConfig, stop_run
from herald.ops.bootstrap import replication_factor
from herald.ops.launch import HERALD_ARGV
from herald.ops.pipeline import pipeline_stages
from herald.schemas.catalog_model import Catalog

STOP_MARGIN_S = 10.0  # `herald down` waits this beyond the children's own shutdown deadline


@dataclass(frozen=True)
class RunPlan:
    specs: tuple[ProcessSpec, ...]
    skipped: tuple[str, ...]  # what was not started, and why


def run_state_path(settings: Settings) -> Path:
    return settings.home / "run" / "state.json"


def parse_scale(values: Sequence[str], known: Sequence[str]) -> dict[str, int]:
    """`deliver:email=3` -> {"deliver:email": 3}; ValueError naming a bad or unknown entry."""
    scale: dict[str, int] = {}
    for value in values:
        stage, sep, count = value.partition("=")
        if not stage or not sep or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--scale {value!r}: expected STAGE=N with N >= 1, e.g. deliver:email=3")
        if stage not in known:
            raise ValueError(f"--scale {value!r}: no stage {stage!r}; stages: {', '.join(known)}")
        scale[stage] = int(count)
    return scale


def process_name(stage: str, number: int, count: int) -> str:
    """A file-name-safe process name: deliver:email -> deliver-email, deliver-email-2 when scaled."""
    base = stage.replace(":", "-")
    return base if count == 1 else f"{base}-{number}"


def plan_run(settings: Settings, catalog: Catalog, scale: Mapping[str, int]) -> RunPlan:
    """What `herald run` starts: each stage (times its scale), the API, and the ingest if it can."""
    host = socket.gethostname()
    specs: list[ProcessSpec] = []
    for stage in pipeline_stages(catalog, settings.namespace, settings.streams_app_id):
        count = scale.get(stage.name, 1)
        for number in range(1, count + 1):
            name = process_name(stage.name, number, count)
            specs.append(ProcessSpec(name, (*HERALD_ARGV, *stage.command.split()[1:]),
                                     {env_name("instance_id"): f"{host}-{name}"}, stage.name))
    specs.append(ProcessSpec("api", (*HERALD_ARGV, "api"), stage="api"))
    skipped: list[str] = []
    if settings.ingest_secrets:
        specs.append(ProcessSpec("ingest", (*HERALD_ARGV, "ingest"), stage="ingest"))
    else:
        skipped.append(f"ingest: {env_name('ingest_secrets')} is not set (it never accepts unsigned events)")
    return RunPlan(tuple(specs), tuple(skipped))


def run_pipeline(settings: Settings, catalog: Catalog, scale: Mapping[str, int], stop: threading.Event,
                 echo: Echo) -> Supervisor:
    """Start the plan under a supervisor and keep it alive until `stop`; the supervisor, for its
    counts. The children get the resolved endpoints, so none of them looks for them again."""
    endpoints = resolve_endpoints(settings)
    environ = child_environ(settings, os.environ, kafka_bootstrap=endpoints.kafka_bootstrap,
                            database_url=endpoints.database_url,
                            replication_factor=replication_factor(settings))
    plan = plan_run(settings, catalog, scale)
    for reason in plan.skipped:
        echo(f"not started: {reason}")
    config = SupervisorConfig(log_dir=settings.home / "logs" / "run", state_path=run_state_path(settings),
                              stop_timeout_s=settings.shutdown_timeout_s)
    supervisor = Supervisor(config, plan.specs, environ, echo)
    supervisor.run(stop)
    return supervisor


def stop_pipeline(settings: Settings) -> list[str]:
    """What `herald down` does first: stop a `herald run` of this home, if one runs."""
    return stop_run(run_state_path(settings), settings.shutdown_timeout_s + STOP_MARGIN_S)
