"""The Kubernetes documents of `herald k8s render`, built from the workloads of k8s_manifests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herald.infra.settings import Settings, env_name
from herald.ops.k8s_manifests import (
    CATALOG_DIR,
    HOME_DIR,
    METRICS_PORT,
    K8sOptions,
    Workload,
    catalog_files,
    config_key,
    content_name,
    copied_settings,
    labels,
    require_services,
    secret_keys,
    workloads,
)
from herald.schemas.catalog_model import Catalog

Document = dict[str, Any]
_GRACE_MARGIN_S = 5  # beyond HERALD_SHUTDOWN_TIMEOUT_S, before the kubelet's SIGKILL


@dataclass(frozen=True)
class _Pods:
    """What every pod of the pipeline shares."""

    options: K8sOptions
    catalog: Catalog
    catalog_map: str
    catalog_items: tuple[tuple[str, str], ...]  # (ConfigMap key, path under CATALOG_DIR)
    settings_map: str
    grace_s: int

    def meta(self, name: str, component: str) -> Document:
        return {"name": name, "namespace": self.options.namespace, "labels": labels(component, self.catalog)}

    def template(self, component: str, args: tuple[str, ...], extra: Document) -> Document:
        container = {
            "name": "herald", "image": self.options.image, "args": list(args),
            "envFrom": [{"configMapRef": {"name": self.settings_map}},
                        {"secretRef": {"name": self.options.secret}}],
            "volumeMounts": [{"name": "catalog", "mountPath": CATALOG_DIR, "readOnly": True},
                             {"name": "home", "mountPath": HOME_DIR}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            **extra,
        }
        items = [{"key": key, "path": path} for key, path in self.catalog_items]
        return {
            "metadata": {"labels": labels(component, self.catalog)},
            "spec": {
                "terminationGracePeriodSeconds": self.grace_s,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                "containers": [container],
                "volumes": [{"name": "catalog", "configMap": {"name": self.catalog_map, "items": items}},
                            {"name": "home", "emptyDir": {}}],
            },
        }


def render_manifests(settings: Settings, catalog: Catalog, catalog_path: Path,
                     variables: Mapping[str, bool], options: K8sOptions) -> tuple[list[Document], list[str]]:
    """The documents, in the order `kubectl apply` may create them, and the header that says
    what the operator creates first (the namespace, its Secret, KEDA)."""
    require_services(settings)
    files = catalog_files(catalog_path, catalog)
    config = {**copied_settings(settings), env_name("catalog"): f"{CATALOG_DIR}/{catalog_path.name}"}
    if options.otlp_endpoint:
        config["OTEL_EXPORTER_OTLP_ENDPOINT"] = options.otlp_endpoint
    pods = _Pods(options, catalog, content_name("herald-catalog", files),
                 tuple((config_key(path), path) for path in files), content_name("herald-settings", config),
                 int(settings.shutdown_timeout_s) + _GRACE_MARGIN_S)
    documents: list[Document] = [
        _config_map(pods, pods.catalog_map, {config_key(path): text for path, text in files.items()}),
        _config_map(pods, pods.settings_map, config),
        _setup_job(pods, {**files, **config, "image": options.image}),
    ]
    for workload in workloads(settings, catalog, options.ingest):
        documents.append(_deployment(pods, workload))
        if workload.port is not None:
            documents.append(_service(pods, workload))
        if workload.scaled is not None:
            documents.append(_scaled_object(pods, workload, settings))
    return documents, _header(catalog, variables, options)


def _config_map(pods: _Pods, name: str, data: Mapping[str, str]) -> Document:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": pods.meta(name, "config"),
            "data": dict(data)}


def _setup_job(pods: _Pods, content: Mapping[str, str]) -> Document:
    """`herald up` once per catalog, settings and image: migrations, topics, schemas. Named by
    their hash, since a Job's template cannot change: a new catalog gets a new Job."""
    name = content_name("herald-setup", content)
    template = pods.template("setup", ("up",), {})
    template["spec"]["restartPolicy"] = "OnFailure"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": pods.meta(name, "setup"),
            "spec": {"backoffLimit": 10, "template": template}}


def _deployment(pods: _Pods, workload: Workload) -> Document:
    component = workload.name.removeprefix("herald-")
    extra: Document = {}
    if workload.metrics:
        extra["env"] = [{"name": env_name("metrics_port"), "value": str(METRICS_PORT)},
                        {"name": env_name("metrics_host"), "value": "0.0.0.0"}]
        extra["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
    if workload.port is not None:
        extra["ports"] = [{"name": "http", "containerPort": workload.port}]
        extra["readinessProbe"] = ({"httpGet": {"path": "/healthz", "port": "http"}}
                                   if workload.stage == "ingest" else {"tcpSocket": {"port": "http"}})
    spec: Document = {"selector": {"matchLabels": _selector(component)},
                      "template": pods.template(component, workload.args, extra)}
    if workload.scaled is None:  # KEDA owns the replicas of a scaled one: apply never resets them
        spec = {"replicas": 1, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": pods.meta(workload.name, component),
            "spec": spec}


def _service(pods: _Pods, workload: Workload) -> Document:
    component = workload.name.removeprefix("herald-")
    return {"apiVersion": "v1", "kind": "Service", "metadata": pods.meta(workload.name, component),
            "spec": {"selector": _selector(component),
                     "ports": [{"name": "http", "port": workload.port, "targetPort": "http"}]}}


def _scaled_object(pods: _Pods, workload: Workload, settings: Settings) -> Document:
    """KEDA's Kafka scaler on the group's lag: one replica per `lag_threshold` records behind,
    at least one, at most one per partition."""
    assert workload.scaled is not None
    scaled = workload.scaled
    trigger = {"bootstrapServers": str(settings.kafka_bootstrap), "consumerGroup": scaled.group,
               "topic": scaled.topic, "lagThreshold": str(pods.options.lag_threshold),
               "offsetResetPolicy": "earliest",  # as the workers' auto.offset.reset
               "allowIdleConsumers": "false"}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": pods.meta(workload.name, workload.name.removeprefix("herald-")),
            "spec": {"scaleTargetRef": {"name": workload.name}, "minReplicaCount": 1,
                     "maxReplicaCount": scaled.partitions, "pollingInterval": 15,
                     "triggers": [{"type": "kafka", "metadata": trigger}]}}


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "herald", "app.kubernetes.io/component": component}


def _header(catalog: Catalog, variables: Mapping[str, bool], options: K8sOptions) -> list[str]:
    required, optional = secret_keys(variables, options.ingest)
    lines = [f"Herald's pipeline for the catalog {catalog.name!r}, rendered by `herald k8s render`.",
             f"Before applying: KEDA installed (its ScaledObjects scale delivery), the namespace "
             f"{options.namespace!r}, and in it the Secret {options.secret!r} with",
             f"  required: {', '.join(required)}"]
    if optional:
        lines.append(f"  optional (the catalog has defaults): {', '.join(optional)}")
    return lines
