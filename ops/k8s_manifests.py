"""Kubernetes manifests of a catalog's pipeline: what `herald k8s render` prints.

The stages are the ones `herald run` starts (`pipeline_stages`), one Deployment each, except
delivery: one Deployment per delivery topic (`herald deliver --channel C --tier N`), so each
consumer group scales on its own lag through a KEDA ScaledObject, bounded by its topic's
partitions (a member beyond them would get none). The catalog and its files travel in a
ConfigMap, the settings that are not secret in another, both named by a hash of what they
hold so a change rolls the pods. Secrets (the database URL, the ingest's HMAC secrets, the
catalog's `${VARIABLES}`) live in a Secret the operator creates: referenced, never rendered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from herald.infra.settings import Settings, env_name
from herald.ops.pipeline import pipeline_stages
from herald.schemas.catalog import topic_catalog
from herald.schemas.catalog_model import Catalog
from herald.schemas.templates import SUFFIX

CATALOG_DIR = "/etc/herald/catalog"
HOME_DIR = "/var/lib/herald"  # an emptyDir: Faust's per-app folders, nothing that must survive
METRICS_PORT = 9100
CONFIG_MAP_LIMIT = 1_000_000  # bytes; the API server refuses a ConfigMap over 1 MiB
# Settings of the machine that renders (its embedded services, its paths) or secrets: never
# copied into the manifests. The pods get their own home, catalog path and listen addresses.
_NOT_COPIED = frozenset({
    "home", "maven_repo", "catalog", "database_url", "ingest_secrets", "registry_version",
    "registry_heap_mb", "kafka_version", "kafka_heap_mb", "kafka_brokers", "instance_id",
    "api_host", "ingest_host", "metrics_host", "metrics_port"})
_KEY = re.compile(r"[^-._a-zA-Z0-9]")


class ManifestError(ValueError):
    """The manifests cannot be rendered; the message says what is missing or wrong."""


@dataclass(frozen=True)
class K8sOptions:
    image: str  # the production image (infra/docker/Dockerfile, target herald)
    namespace: str = "herald"  # the Kubernetes namespace
    secret: str = "herald"  # the Secret every pod reads its secret variables from
    lag_threshold: int = 1000  # records of lag per delivery replica before KEDA adds one
    ingest: bool = True  # the signed HTTP ingest (needs HERALD_INGEST_SECRETS in the Secret)
    otlp_endpoint: str | None = None  # where the stages export their spans (OTLP/HTTP)


@dataclass(frozen=True)
class ScaledGroup:
    group: str  # the consumer group, as on the broker
    topic: str  # the one topic it reads, as on the broker
    partitions: int


@dataclass(frozen=True)
class Workload:
    name: str  # the Deployment's name
    stage: str  # Herald's stage name ("deliver:email")
    args: tuple[str, ...]  # `herald` arguments
    port: int | None = None  # a Service in front of it, on this port
    metrics: bool = False  # it serves Prometheus metrics when HERALD_METRICS_PORT is set
    scaled: ScaledGroup | None = None


def k8s_name(*parts: str) -> str:
    """A DNS-1123 name: herald-deliver-email-retry-1."""
    return "-".join(("herald", *parts)).replace("_", "-").replace(":", "-").lower()


def workloads(settings: Settings, catalog: Catalog, ingest: bool) -> tuple[Workload, ...]:
    """Every Deployment of the pipeline, in dataflow order; ManifestError on a name clash."""
    partitions = {spec.name: spec.partitions for spec in topic_catalog(catalog, settings.namespace)}
    found: list[Workload] = []
    for stage in pipeline_stages(catalog, settings.namespace, settings.streams_app_id):
        if not stage.name.startswith("deliver:"):
            found.append(Workload(k8s_name(stage.name), stage.name, tuple(stage.command.split()[1:]),
                                  metrics=stage.name == "relay"))
            continue
        channel = stage.name.removeprefix("deliver:")
        for tier, spec in enumerate(stage.groups):  # the requests, then each retry tier, in order
            (topic,) = spec.topics
            suffix = ("deliver", channel) if tier == 0 else ("deliver", channel, "retry", str(tier))
            found.append(Workload(k8s_name(*suffix), stage.name,
                                  ("deliver", "--channel", channel, "--tier", str(tier)), metrics=True,
                                  scaled=ScaledGroup(spec.group, topic, partitions[topic])))
    found.append(Workload(k8s_name("api"), "api", ("api",), port=settings.api_port))
    if ingest:
        found.append(Workload(k8s_name("ingest"), "ingest", ("ingest",), port=settings.ingest_port))
    names = [w.name for w in found]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ManifestError(f"channels whose names differ only by _ and - share a Kubernetes name: "
                            f"{', '.join(clashes)}; rename one in the catalog")
    return tuple(found)


def catalog_files(path: Path, catalog: Catalog) -> dict[str, str]:
    """The catalog file and every file it reads (event schemas, templates), by path relative
    to its folder; ManifestError for one outside that folder (a ConfigMap cannot carry it)."""
    folder = path.parent
    names = [path.name]
    for spec in catalog.events.values():
        names += [spec.schema_file, *spec.earlier_schemas]
    templates = Path(catalog.template_dir)
    if templates.is_dir():
        names += [str(PurePosixPath(catalog.templates) / p.name)
                  for p in sorted(templates.glob(f"*{SUFFIX}"))]
    files: dict[str, str] = {}
    for name in names:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ManifestError(f"{name} is outside the catalog's folder; keep the catalog's files under it")
        files[str(relative)] = (folder / relative).read_text(encoding="utf-8")
    if sum(len(text.encode()) for text in files.values()) > CONFIG_MAP_LIMIT:
        raise ManifestError("the catalog's files exceed a ConfigMap's 1 MiB")
    return files


def copied_settings(settings: Settings) -> dict[str, str]:
    """The settings that differ from their defaults and belong to the pipeline, not to this
    machine, as the pods' environment; then the pods' own paths and listen addresses."""
    defaults, environ = Settings(), settings.to_environ()
    copied = {env_name(f.name): environ[env_name(f.name)] for f in dataclasses.fields(Settings)
              if f.name not in _NOT_COPIED and getattr(settings, f.name) != getattr(defaults, f.name)}
    return {**copied, env_name("home"): HOME_DIR, env_name("api_host"): "0.0.0.0",
            env_name("ingest_host"): "0.0.0.0"}


def secret_keys(catalog_variables: Mapping[str, bool], ingest: bool) -> tuple[list[str], list[str]]:
    """(required, optional) keys of the Secret: optional ones have a default in the catalog."""
    required = [env_name("database_url"), *([env_name("ingest_secrets")] if ingest else [])]
    required += sorted(v for v, has_default in catalog_variables.items() if not has_default)
    return required, sorted(v for v, has_default in catalog_variables.items() if has_default)


def content_name(base: str, content: Mapping[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return f"{base}-{digest}"


def config_key(relative: str) -> str:
    return _KEY.sub("_", relative)


def require_services(settings: Settings) -> None:
    """The pods reach Kafka and the registry at configured addresses: the embedded ones run on
    the machine of `herald up`, not in the cluster."""
    missing = [env_name(name) for name in ("kafka_bootstrap", "schema_registry_url")
               if getattr(settings, name) is None]
    if missing:
        raise ManifestError(f"set {' and '.join(missing)} to the address(es) the cluster's pods reach "
                            "(the embedded services run on this machine only)")


def labels(component: str, catalog: Catalog) -> dict[str, str]:
    return {"app.kubernetes.io/name": "herald", "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "herald",
            "app.kubernetes.io/instance": catalog.name.replace("_", "-")}


def as_yaml_documents(documents: list[dict[str, Any]], header: list[str]) -> str:
    """Multi-document YAML under a comment header; files (the catalog, schemas) as blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    _Dumper.add_representer(str, text)
    comment = "".join(f"# {line}\n" for line in header)
    return comment + yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, explicit_start=True,
                                   allow_unicode=True, width=110)
