"""One frozen settings object per process, read from HERALD_* variables at the entry point.

Each setting is typed, documented and named once; its variable is HERALD_<NAME>. An
unknown HERALD_* variable is an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "HERALD_"


class SettingsError(ValueError):
    """A HERALD_* variable is unknown or its value does not parse; the message names it."""


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    home: Path = field(default=Path(".herald"), metadata=_doc(
        "Where the embedded Kafka, PostgreSQL and schema registry keep data, logs and state."))
    maven_repo: Path | None = field(default=None, metadata=_doc(
        "Maven local repository for the Kafka jars and the registry's archive; unset means <home>/m2."))
    catalog: Path | None = field(default=None, metadata=_doc(
        "The catalog file (YAML) declaring the event kinds, notifications and channels; unset "
        "means the default example's (`herald catalog show` prints it). `herald catalog check FILE` "
        "checks one."))
    kafka_bootstrap: str | None = field(default=None, metadata=_doc(
        "Bootstrap servers of an existing Kafka; unset means the embedded broker."))
    database_url: str | None = field(default=None, metadata=_doc(
        "SQLAlchemy URL of an existing PostgreSQL; unset means the embedded cluster."))
    schema_registry_url: str | None = field(default=None, metadata=_doc(
        "URL of an existing Confluent-compatible schema registry (Confluent Schema Registry, "
        "Karapace, Apicurio's `/apis/ccompat/v7`); unset means the embedded Apicurio Registry."))
    registry_version: str = field(default="3.3.3", metadata=_doc(
        "Apicurio Registry release the embedded schema registry runs, fetched from Maven Central."))
    registry_heap_mb: int = field(default=384, metadata=_doc(
        "Maximum JVM heap of the embedded schema registry, in MiB."))
    kafka_version: str = field(default="4.3.1", metadata=_doc(
        "Apache Kafka release the embedded broker runs, fetched from Maven Central."))
    kafka_heap_mb: int = field(default=512, metadata=_doc(
        "Maximum JVM heap of each embedded broker, in MiB."))
    kafka_brokers: int = field(default=1, metadata=_doc(
        "Brokers `herald up` starts when it starts the embedded Kafka: 1, or 3 for a cluster "
        "(each broker and controller) whose topics get replication factor 3, min ISR 2."))
    replication_factor: int = field(default=1, metadata=_doc(
        "Replicas of every topic Herald creates on a configured Kafka (3 on the three-broker "
        "compose cluster); on the embedded one it follows its brokers (1, or 3)."))
    namespace: str = field(default="", metadata=_doc(
        "Prefix for every topic and consumer group, to run pipelines apart on one cluster."))
    relay_batch_size: int = field(default=5000, metadata=_doc(
        "Outbox rows one claim of a relay takes (one DELETE ... RETURNING)."))
    relay_claims_per_commit: int = field(default=8, metadata=_doc(
        "Claims a relay publishes in one transaction, each fetched while the last one's "
        "records travel; all are removed at its commit."))
    relay_poll_interval_s: float = field(default=1.0, metadata=_doc(
        "Fallback poll of an idle relay, in seconds; commits wake it at once via NOTIFY."))
    relay_flush_timeout_s: float = field(default=30.0, metadata=_doc(
        "How long the relay waits for the broker to acknowledge a batch, in seconds."))
    relay_lease_interval_s: float = field(default=1.0, metadata=_doc(
        "How often relays rebalance outbox shards, in seconds: a dead relay's shards move then."))
    relay_shutdown_timeout_s: float = field(default=10.0, metadata=_doc(
        "After SIGTERM, how long a relay's last batch may wait for acknowledgments, in seconds."))
    ingest_host: str = field(default="127.0.0.1", metadata=_doc(
        "Address the HTTP ingest API (POST /v1/events) listens on."))
    ingest_port: int = field(default=8090, metadata=_doc("Port of the HTTP ingest API."))
    ingest_secrets: str | None = field(default=None, repr=False, metadata=_doc(
        "Comma-separated HMAC secrets the ingest API accepts (several during a rotation)."))
    ingest_tolerance_s: float = field(default=300.0, metadata=_doc(
        "How far a signed request's timestamp may be from the server's clock, in seconds."))
    ingest_max_body_bytes: int = field(default=262144, metadata=_doc(
        "Largest request body the ingest API reads; larger ones get 413."))
    ingest_idempotency_ttl_s: float = field(default=86400.0, metadata=_doc(
        "How long an Idempotency-Key is remembered, in seconds."))
    delivery_timeout_s: float = field(default=10.0, metadata=_doc(
        "Timeout of one provider request, in seconds."))
    delivery_commit_interval_s: float = field(default=0.1, metadata=_doc(
        "How often a delivery worker commits finished work (outcomes and offsets, one "
        "Kafka transaction), in seconds."))
    delivery_transaction_timeout_s: float = field(default=5.0, metadata=_doc(
        "Kafka transaction timeout of a delivery worker, in seconds: a killed worker's open "
        "transaction is aborted after this, which its partitions' next owner waits for. "
        "Below the session timeout, so the wait never outlasts the rebalance."))
    kafka_session_timeout_s: float = field(default=6.0, metadata=_doc(
        "How soon a consumer group gives a dead member's partitions to a sibling, in seconds "
        "(6 is the broker's default minimum)."))
    instance_id: str = field(default="", metadata=_doc(
        "This process's name among its stage's processes, unique and kept across restarts (a "
        "StatefulSet pod's name, a systemd unit's instance). When set, the consumers of the "
        "router, the delivery workers, corrections and the DLQ indexer join their groups as "
        "static members (KIP-345): restarted, they take their partitions back at once instead "
        "of waiting out the session timeout of their former selves. A process that stops is "
        "not replaced in its group before that timeout. Unset: dynamic members."))
    streams_app_id: str = field(default="herald-streams", metadata=_doc(
        "The stream processors' application id: the router's consumer group, and the prefix of "
        "the Faust processors' groups and internal topics."))
    streams_commit_interval_s: float = field(default=0.2, metadata=_doc(
        "How often the Faust processors commit; records they derived are published at each "
        "commit (the router commits each batch it routes)."))
    streams_monitor_nice: int = field(default=10, metadata=_doc(
        "CPU priority (Unix nice, 0-19) of the Faust processors (missing detector, session "
        "reconciler, status counts): they are on no notification's path, so under contention "
        "the relay, router and delivery run first; 0 treats them alike. Where Linux schedules by "
        "autogroup, a processor leading its own session (as `herald run` starts it) sets its "
        "autogroup's nice too."))
    missing_scan_interval_s: float = field(default=1.0, metadata=_doc(
        "How often each streams worker looks for deadlines passed in its partitions, in seconds."))
    status_stats_flush_interval_s: float = field(default=1.0, metadata=_doc(
        "Status stats: how often each worker sends the per-minute counts that changed, in seconds "
        "(the delay before notifications.status.stats shows an outcome)."))
    session_grace_s: float = field(default=30.0, metadata=_doc(
        "Session reconciler: how long declared and reported session states may disagree before "
        "it is a mismatch, and how long an instance may be silent before its sessions are "
        "unobserved, in seconds. Span several gateway report intervals."))
    session_resync_interval_s: float = field(default=5.0, metadata=_doc(
        "Session reconciler: how often each worker recomputes every session it owns, besides on "
        "every input, in seconds."))
    session_auto_reconnect_workspaces: tuple[str, ...] = field(default=("*",), metadata=_doc(
        "Workspaces whose sessions found missing on their gateway are asked to reconnect, "
        "comma-separated; * for all, empty for none (they are only marked disconnected)."))
    api_host: str = field(default="127.0.0.1", metadata=_doc(
        "Address the ops API and console (`herald api`) listen on."))
    api_port: int = field(default=8095, metadata=_doc("Port of the ops API and console."))
    metrics_port: int = field(default=0, metadata=_doc(
        "Port a relay or delivery process serves its Prometheus metrics on (/metrics); 0: none. "
        "Give each process on a host its own. The ops API serves the pipeline's at its /metrics."))
    metrics_host: str = field(default="127.0.0.1", metadata=_doc(
        "Address a process's metrics server listens on."))
    health_outbox_max_age_s: float = field(default=60.0, metadata=_doc(
        "`herald health` and /v1/health fail when the oldest outbox row waits longer, in seconds "
        "(relays down or Kafka unreachable for that long)."))
    health_max_consumer_lag: int = field(default=100000, metadata=_doc(
        "`herald health` and /v1/health fail when a needed consumer group is this many records behind."))
    health_max_lag_s: float = field(default=60.0, metadata=_doc(
        "`herald health` and /v1/health fail when the oldest record a needed consumer group has not "
        "consumed has waited longer, in seconds (since its due time, for a retry tier's records)."))
    health_stages: tuple[str, ...] = field(default=("*",), metadata=_doc(
        "The stages `herald health` requires to run, comma-separated: relay, router, missing, sessions, "
        "status, deliver:<channel> for each channel of the catalog, corrections, dlq-index, history-index; "
        "* for all. "
        "A required stage fails health when it has no live member (the relay: no shard leased)."))
    history_retention_days: float = field(default=7.0, metadata=_doc(
        "How long the notification history (`herald notifications show`) keeps a request or an "
        "outcome, in days. The history is rebuilt from the topics when lost, which keep 7 days."))
    shutdown_timeout_s: float = field(default=30.0, metadata=_doc(
        "After SIGTERM or Ctrl-C, the longest any Herald process takes to exit, in seconds, Kafka up or "
        "down: past it, what is unfinished is left to the next owner (every stage is at-least-once "
        "or transactional)."))
    log_level: str = field(default="INFO", metadata=_doc("Python logging level."))
    log_format: str = field(default="text", metadata=_doc(
        "text, or json: one JSON object per line with request_id and trace_id."))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        known = {env_name(f.name): f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(cls)
        values = {f.name: _parse(name, environ[name], hints[f.name])
                  for name, f in known.items() if name in environ}
        settings = cls(**values)
        return dataclasses.replace(settings, home=settings.home.absolute())

    def to_environ(self) -> dict[str, str]:
        """The variables that reproduce these settings in a child process."""
        result = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                result[env_name(f.name)] = _format(value)
        return result


def child_environ(settings: Settings, base: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The environment of a child process: `base` without its HERALD_* variables, then these
    settings, then `overrides` (setting field names, e.g. kafka_bootstrap="...")."""
    environ = {k: v for k, v in base.items() if not k.startswith(PREFIX)}
    environ.update(dataclasses.replace(settings, **overrides).to_environ())
    return environ


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def documented_settings() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting: README and `herald settings` show these."""
    return [(env_name(f.name), "" if f.default is None else _format(f.default), f.metadata["doc"])
            for f in dataclasses.fields(Settings)]


def settings_reference() -> str:
    """The settings reference page (docs/settings.md), as `herald settings --markdown` prints it."""
    rows = [f"| `{variable}` | {f'`{default}`' if default else ''} | {_escaped(doc)} |"
            for variable, default, doc in documented_settings()]
    return "\n".join([
        "# Settings", "",
        "Every Herald process reads its settings once, at start, from `HERALD_*` variables into one",
        "frozen object (`herald.infra.settings.Settings`), and gives each stage a small config built",
        "from it. An unknown `HERALD_*` variable is an error, so a typo never falls back to a default.",
        "This page is generated from that object: `herald settings --markdown > docs/settings.md`.",
        "", "| variable | default | meaning |", "|---|---|---|", *rows, ""])


def _escaped(text: str) -> str:
    """Markdown that shows `<home>` as written, not as an HTML tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _format(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_format(item) for item in value)
    return str(value)


def _parse(name: str, raw: str, annotation: Any) -> Any:
    if typing.get_origin(annotation) is tuple:  # tuple[X, ...]: comma-separated X
        item = typing.get_args(annotation)[0]
        return tuple(_parse(name, part.strip(), item) for part in raw.split(",") if part.strip())
    target = _concrete_type(annotation)
    try:
        if target is bool:
            return _parse_bool(raw)
        return target(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {target.__name__}") from None


def _concrete_type(annotation: Any) -> type:
    if isinstance(annotation, types.UnionType):  # `X | None`: parse as X
        (annotation,) = [arg for arg in annotation.__args__ if arg is not type(None)]
    return annotation


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)
