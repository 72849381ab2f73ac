"""`herald status`: what runs where. The embedded or configured services, then each stage of
the pipeline: its consumer groups' members (client id and host) and lag, or, for relays,
the database sessions that lease outbox shards; and the processes a `herald run` keeps alive."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from herald.infra.kafka_views import GroupView, KafkaUnavailable, group_views
from herald.infra.processes import ServiceError
from herald.infra.services import resolve_database_url
from herald.infra.settings import Settings
from herald.infra.supervisor import process_rows, read_state
from herald.ops.bootstrap import describe, kafka_if_known
from herald.ops.pipeline import Stage, pipeline_stages, stage_groups
from herald.ops.run import run_state_path
from herald.producers.leases import lease_holders
from herald.schemas.catalog_model import Catalog


@dataclass(frozen=True)
class StageStatus:
    stage: str
    state: str  # running, stopped, or unknown (what answers it did not)
    where: str  # members, or why unknown
    lag: int | None = None  # records its groups have not consumed

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def pipeline_status(settings: Settings, catalog: Catalog) -> dict[str, object]:
    """Services and stages, as `herald status --json` prints them; never raises for what is down."""
    services = [{"service": name, "state": state, "where": where}
                for name, state, where in describe(settings)]
    bootstrap = kafka_if_known(settings)
    try:
        engine: sa.Engine | None = sa.create_engine(resolve_database_url(settings), poolclass=sa.NullPool,
                                                    connect_args={"connect_timeout": 5})
    except ServiceError:
        engine = None
    try:
        stages = stage_statuses(settings, catalog, bootstrap, engine)
    finally:
        if engine is not None:
            engine.dispose()
    return {"services": services, "kafka_bootstrap": bootstrap, "stages": [s.as_dict() for s in stages],
            "processes": process_rows(read_state(run_state_path(settings)), time.time())}


def stage_statuses(settings: Settings, catalog: Catalog, bootstrap: str | None,
                   engine: sa.Engine | None) -> list[StageStatus]:
    stages = pipeline_stages(catalog, settings.namespace, settings.streams_app_id)
    views = _views(stages, bootstrap)
    return [_relays(engine) if not stage.groups else _consumers(stage, views) for stage in stages]


def _views(stages: tuple[Stage, ...], bootstrap: str | None) -> dict[str, GroupView] | str:
    """Every group's view, or why there is none."""
    if bootstrap is None:
        return "Kafka is not running"
    try:
        return group_views(bootstrap, stage_groups(stages))
    except KafkaUnavailable as exc:
        return str(exc)


def _consumers(stage: Stage, views: dict[str, GroupView] | str) -> StageStatus:
    if isinstance(views, str):
        return StageStatus(stage.name, "unknown", views)
    groups = [views[spec.group] for spec in stage.groups]
    names = sorted({name for view in groups for name in view.member_names})
    running = all(view.members for view in groups)
    state = "running" if running else ("partly running" if names else "stopped")
    return StageStatus(stage.name, state, ", ".join(names) or f"start: {stage.command}",
                      sum(view.lag for view in groups))


def _relays(engine: sa.Engine | None) -> StageStatus:
    if engine is None:
        return StageStatus("relay", "unknown", "the database is not running")
    try:
        with engine.connect() as conn:
            holders = lease_holders(conn)
            names = conn.execute(sa.text("SELECT pid, application_name, client_addr FROM pg_stat_activity "
                                         "WHERE pid = ANY(:pids)"), {"pids": [h.pid for h in holders]}).all()
    except sa.exc.OperationalError as exc:
        return StageStatus("relay", "unknown", str(exc.orig).splitlines()[0])
    shards = {holder.pid: len(holder.shards) for holder in holders}
    where = ", ".join(f"{name or 'backend ' + str(pid)}@{addr or 'local'} ({shards[pid]} shards)"
                      for pid, name, addr in names)
    return StageStatus("relay", "running" if holders else "stopped", where or "start: herald relay")
