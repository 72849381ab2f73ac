"""The System Health widget of the seeds, as data: what `herald health` prints and /v1/health
serves. Each figure is read on its own, bounded in time, so one unreachable part is reported
as such while the others still answer.

A check fails (non-zero exit, HTTP 503) when the broker or the database is unreachable, the
outbox's oldest row waits too long, or a stage the pipeline needs is not running or lags:
one of its consumer groups has no live member, or its oldest unconsumed record has waited
too long (or too many records wait). The relay runs when it leases outbox shards. Open
missing notifications and open dead letters warn: they are work for ops, not an outage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.kafka_views import GroupView, KafkaUnavailable, group_views, live_entries
from herald.infra.settings import Settings
from herald.ops.channel_control import audit_rows, control_history
from herald.ops.pipeline import Stage, needed_stages, stage_groups
from herald.producers.leases import lease_holders
from herald.producers.outbox import outbox_backlog
from herald.schemas.catalog import MISSING_NOTIFICATIONS, SESSION_MISMATCHES, qualified
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import UndecodableRecord, decode_expecting

STATES = ("ok", "warn", "fail")


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok, warn or fail
    detail: str


@dataclass
class HealthReport:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return max((c.state for c in self.checks), key=STATES.index, default="ok")

    @property
    def healthy(self) -> bool:
        return self.state != "fail"

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "healthy": self.healthy, "checks": [asdict(c) for c in self.checks],
                **self.figures}


def health_report(settings: Settings, catalog: Catalog, kafka_bootstrap: str | None,
                  engine: sa.Engine | None) -> HealthReport:
    report = HealthReport()
    try:
        stages = needed_stages(catalog, settings.namespace, settings.streams_app_id, settings.health_stages)
    except ValueError as exc:
        report.checks.append(Check("stages", "fail", f"HERALD_HEALTH_STAGES: {exc}"))
        stages = ()
    _database_part(report, settings, engine, any(stage.name == "relay" for stage in stages))
    _kafka_part(report, settings, kafka_bootstrap, stages)
    return report


def _guarded(report: HealthReport, name: str, read: Callable[[], Check]) -> None:
    try:
        report.checks.append(read())
    except (KafkaUnavailable, sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        reason = str(exc).splitlines()[0]
        report.checks.append(Check(name, "fail", f"unreachable: {reason}"))


def _database_part(report: HealthReport, settings: Settings, engine: sa.Engine | None,
                   relay_needed: bool) -> None:
    if engine is None:
        report.checks.append(Check("database", "fail", "not configured and not running"))
        return

    def database() -> Check:
        with engine.connect() as conn:
            backlog = outbox_backlog(conn)
            report.figures["relays"] = len(lease_holders(conn))
        with Session(engine) as session:
            from herald.ops.dead_letter_ops import open_counts_by_topic

            report.figures["dlq_open"] = open_counts_by_topic(session)
        report.figures["outbox"] = backlog.as_dict()
        return Check("database", "ok", "reachable")

    _guarded(report, "database", database)
    if "outbox" in report.figures:
        age, limit = report.figures["outbox"]["oldest_age_s"], settings.health_outbox_max_age_s
        report.checks.append(Check("outbox", "fail" if age > limit else "ok",
                                   f"{report.figures['outbox']['rows']} rows waiting, oldest {age:.1f} s "
                                   f"(limit {limit:.0f} s)"))
        if relay_needed:
            relays = report.figures["relays"]
            report.checks.append(Check("stage relay", "ok" if relays else "fail",
                                       f"{relays} relay(s) leasing outbox shards" if relays else
                                       "no relay leases outbox shards: start `herald relay`"))
        dead = sum(report.figures["dlq_open"].values())
        report.checks.append(Check("dead letters", "warn" if dead else "ok", f"{dead} open"))


def _kafka_part(report: HealthReport, settings: Settings, bootstrap: str | None,
                stages: tuple[Stage, ...]) -> None:
    if bootstrap is None:
        report.checks.append(Check("kafka", "fail", "not configured and not running"))
        return

    def missing() -> Check:
        entries = live_entries(bootstrap, qualified(MISSING_NOTIFICATIONS, settings.namespace))
        by_type = Counter(key.decode("utf-8", "replace").rsplit("|", 1)[-1] for key in entries)
        report.figures["missing_open"] = {"total": len(entries), "by_type": dict(by_type)}
        verdicts = live_entries(bootstrap, qualified(SESSION_MISMATCHES, settings.namespace))
        kinds = Counter(_kind(entry.value) for entry in verdicts.values())
        report.figures["mismatches_open"] = {"total": len(verdicts), "by_kind": dict(kinds)}
        return Check("kafka", "ok", "reachable")

    def consumers() -> Check:
        views = group_views(bootstrap, stage_groups(stages))
        report.figures["consumer_lag"] = {g: v.lag for g, v in views.items()}
        report.figures["consumer_lag_s"] = {g: round(v.lag_s, 3) for g, v in views.items()}
        report.figures["consumer_members"] = {g: v.members for g, v in views.items()}
        paused = {f"deliver:{c['channel']}" for c in report.figures.get("channels_paused", [])
                  if not c["endpoint"]}
        report.checks.extend(_stage_check(stage, views, settings, stage.name in paused)
                             for stage in stages if stage.groups)
        return Check("consumer groups", "ok", f"{len(views)} read")

    def channels() -> Check:
        paused = paused_channels(bootstrap, settings.namespace)
        report.figures["channels_paused"] = paused
        told = [f"{c['target']} since {c['at']} by {c['actor']}: {c['reason']}" for c in paused]
        return Check("channels", "warn" if paused else "ok", "; ".join(told) or "none paused")

    _guarded(report, "kafka", missing)
    if "missing_open" in report.figures:
        total = report.figures["missing_open"]["total"]
        report.checks.append(Check("missing notifications", "warn" if total else "ok", f"{total} open"))
        mismatched = report.figures["mismatches_open"]["total"]
        report.checks.append(Check("session mismatches", "warn" if mismatched else "ok",
                                   f"{mismatched} open"))
        _guarded(report, "channels", channels)
        _guarded(report, "consumer groups", consumers)


def _stage_check(stage: Stage, views: dict[str, GroupView], settings: Settings,
                 paused: bool = False) -> Check:
    """Fails when a group of the stage has no live member, or lags past a limit (a paused
    channel's delivery stage lags by design: that is said, and is no failure)."""
    problems = []
    groups = [views[spec.group] for spec in stage.groups]
    for view in groups:
        if view.members == 0:
            problems.append(f"{view.group} has no live member ({view.state}): start `{stage.command}`")
        if paused:
            continue
        if view.lag_s > settings.health_max_lag_s:
            problems.append(f"{view.group}'s oldest unconsumed record waited {view.lag_s:.0f} s "
                            f"(limit {settings.health_max_lag_s:.0f} s)")
        if view.lag > settings.health_max_consumer_lag:
            problems.append(f"{view.group} is {view.lag} records behind "
                            f"(limit {settings.health_max_consumer_lag})")
    detail = "; ".join(problems) or (
        f"{min(v.members for v in groups)}+ member(s) per group, lag {sum(v.lag for v in groups)} "
        f"records, oldest waited {max(v.lag_s for v in groups):.1f} s" + (", paused" if paused else ""))
    return Check(f"stage {stage.name}", "fail" if problems else "ok", detail)


def paused_channels(bootstrap: str, namespace: str) -> list[dict[str, Any]]:
    """Every channel and endpoint paused now, with who paused it, when and why."""
    latest: dict[str, dict[str, Any]] = {}
    for row in reversed(audit_rows(control_history(bootstrap, namespace), limit=10**9)):
        latest[row["target"]] = row  # oldest first, so the latest change of each target stays
    return [row for row in latest.values() if row["state"] == "paused"]


def _kind(value: bytes) -> str:
    try:
        return str(decode_expecting(value, "herald.SessionMismatch")["kind"])
    except UndecodableRecord:
        return "undecodable"


def pipeline_figures(report: HealthReport) -> dict[str, Any]:
    """The report's figures as the metrics endpoint exports them."""
    figures = report.figures
    result: dict[str, Any] = {"up": {"database": "outbox" in figures, "kafka": "missing_open" in figures}}
    result["stages"] = {check.name.removeprefix("stage "): check.state != "fail" for check in report.checks
                        if check.name.startswith("stage ")}
    for key in ("outbox", "dlq_open", "consumer_lag", "consumer_lag_s", "consumer_members"):
        if key in figures:
            result[key] = figures[key]
    if "missing_open" in figures:
        result["missing_by_type"] = figures["missing_open"]["by_type"]
        result["mismatches_by_kind"] = figures["mismatches_open"]["by_kind"]
    return result
