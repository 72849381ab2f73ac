"""The System Health widget of the seeds, as data: what `herald health` prints and /v1/health
serves. Each figure is read on its own, bounded in time, so one unreachable part is reported
as such while the others still answer.

A check fails (non-zero exit, HTTP 503) when the broker or the database is unreachable, the
outbox's oldest row waits too long, or a consumer group lags too far. Open missing
notifications and open dead letters warn: they are work for ops, not an outage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.infra.kafka_views import KafkaUnavailable, consumer_lag, live_entries
from herald.infra.settings import Settings
from herald.producers.outbox import outbox_backlog
from herald.schemas.catalog import MISSING_NOTIFICATIONS, SESSION_MISMATCHES, qualified
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


def health_report(settings: Settings, kafka_bootstrap: str | None, engine: sa.Engine | None) -> HealthReport:
    report = HealthReport()
    _database_part(report, settings, engine)
    _kafka_part(report, settings, kafka_bootstrap)
    return report


def _guarded(report: HealthReport, name: str, read: Callable[[], Check]) -> None:
    try:
        report.checks.append(read())
    except (KafkaUnavailable, sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
        reason = str(exc).splitlines()[0]
        report.checks.append(Check(name, "fail", f"unreachable: {reason}"))


def _database_part(report: HealthReport, settings: Settings, engine: sa.Engine | None) -> None:
    if engine is None:
        report.checks.append(Check("database", "fail", "not configured and not running"))
        return

    def database() -> Check:
        with engine.connect() as conn:
            backlog = outbox_backlog(conn)
        with Session(engine) as session:
            from herald.consumers.dead_letter_ops import open_counts_by_topic

            report.figures["dlq_open"] = open_counts_by_topic(session)
        report.figures["outbox"] = backlog.as_dict()
        return Check("database", "ok", "reachable")

    _guarded(report, "database", database)
    if "outbox" in report.figures:
        age, limit = report.figures["outbox"]["oldest_age_s"], settings.health_outbox_max_age_s
        report.checks.append(Check("outbox", "fail" if age > limit else "ok",
                                   f"{report.figures['outbox']['rows']} rows waiting, oldest {age:.1f} s "
                                   f"(limit {limit:.0f} s)"))
        dead = sum(report.figures["dlq_open"].values())
        report.checks.append(Check("dead letters", "warn" if dead else "ok", f"{dead} open"))


def _kafka_part(report: HealthReport, settings: Settings, bootstrap: str | None) -> None:
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

    def lag() -> Check:
        lags = consumer_lag(bootstrap, qualified("herald", settings.namespace))
        report.figures["consumer_lag"] = lags
        worst = max(lags.items(), key=lambda item: item[1], default=("-", 0))
        limit = settings.health_max_consumer_lag
        return Check("consumer lag", "fail" if worst[1] > limit else "ok",
                     f"largest {worst[1]} ({worst[0]}), limit {limit}")

    _guarded(report, "kafka", missing)
    if "missing_open" in report.figures:
        total = report.figures["missing_open"]["total"]
        report.checks.append(Check("missing notifications", "warn" if total else "ok", f"{total} open"))
        mismatched = report.figures["mismatches_open"]["total"]
        report.checks.append(Check("session mismatches", "warn" if mismatched else "ok",
                                   f"{mismatched} open"))
        _guarded(report, "consumer lag", lag)


def _kind(value: bytes) -> str:
    try:
        return str(decode_expecting(value, "herald.SessionMismatch")["kind"])
    except UndecodableRecord:
        return "undecodable"


def pipeline_figures(report: HealthReport) -> dict[str, Any]:
    """The report's figures as the metrics endpoint exports them."""
    figures = report.figures
    result: dict[str, Any] = {"up": {"database": "outbox" in figures, "kafka": "missing_open" in figures}}
    for key in ("outbox", "dlq_open", "consumer_lag"):
        if key in figures:
            result[key] = figures[key]
    if "missing_open" in figures:
        result["missing_by_type"] = figures["missing_open"]["by_type"]
        result["mismatches_by_kind"] = figures["mismatches_open"]["by_kind"]
    return result
