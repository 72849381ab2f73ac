"""`herald k8s render`: every document valid against Kubernetes' and KEDA's schemas, one
Deployment per stage and per delivery topic, a ScaledObject per delivery group bounded by its
partitions, the pods' catalog whole, and no secret in the output. No cluster runs here: the
validators are kubernetes-validate (strict: an unknown field fails) and cloudcoil's KEDA model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from herald.infra.catalogs import example_catalog_path
from herald.infra.settings import Settings
from herald.ops.cli import app
from herald.ops.k8s_manifests import K8sOptions, ManifestError
from herald.ops.k8s_render import render_manifests
from herald.ops.pipeline import pipeline_stages
from herald.schemas.catalog import topic_catalog
from herald.schemas.catalog_file import catalog_variables, load_catalog
from tests.doc_blocks import blocks

EXAMPLES = ("registrations", "tasks", "payments")
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest still patched upstream, and the newest bundled
# The kafka scaler's parameters, as KEDA's documentation of it lists them (2.11 and later).
KAFKA_TRIGGER_KEYS = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                      "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset",
                      "excludePersistentLag", "limitToPartitionsWithLag", "version", "partitionLimitation",
                      "tls", "sasl"}
SERVICES = {"HERALD_KAFKA_BOOTSTRAP": "kafka-0.kafka:9092,kafka-1.kafka:9092",
            "HERALD_SCHEMA_REGISTRY_URL": "http://registry.kafka:8080/apis/ccompat/v7",
            "HERALD_REPLICATION_FACTOR": "3"}
CLI = typer.main.get_command(app)


def rendered(example: str, environ: dict[str, str] | None = None, **options: object) -> list[dict]:
    settings = Settings.from_environ(SERVICES if environ is None else environ)
    path = example_catalog_path(example)
    catalog = load_catalog(path, {}, connections=False)
    documents, _header = render_manifests(settings, catalog, path, catalog_variables(path),
                                          K8sOptions(image="registry.example/herald:0.1.0", **options))
    return yaml.safe_load_all(yaml.safe_dump_all(documents))  # as kubectl reads them


def of_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def settings_config_map(documents: list[dict]) -> dict:
    return next(m for m in of_kind(documents, "ConfigMap").values() if "HERALD_CATALOG" in m["data"])


def keda_problems(document: dict) -> list[str]:
    """What KEDA's model refuses, or ignores: pydantic drops an unknown field silently, so a
    document must come back from the model as it went in."""
    model = ScaledObject.model_validate(document)
    back = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    problems = [] if back == document else [f"not as KEDA reads it: {back} != {document}"]
    for trigger in document["spec"]["triggers"]:
        unknown = set(trigger["metadata"]) - KAFKA_TRIGGER_KEYS
        problems += [f"the kafka scaler has no {key}" for key in sorted(unknown)]
    return problems


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_document_is_valid_for_kubernetes_and_keda(example):
    documents = list(rendered(example))
    for document in documents:
        if document["kind"] == "ScaledObject":
            assert keda_problems(document) == [], document["metadata"]["name"]
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)  # raises on a bad one
    assert {d["kind"] for d in documents} >= {"ConfigMap", "Job", "Deployment", "Service", "ScaledObject"}


def test_the_validators_catch_a_wrong_document():
    """The checks above can fail: a misspelt field and a wrong type are both refused."""
    documents = list(rendered("registrations"))
    deployment = next(iter(of_kind(documents, "Deployment").values()))
    deployment["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    scaled = next(iter(of_kind(documents, "ScaledObject").values()))
    scaled["spec"]["maxReplicas"] = 6
    assert keda_problems(scaled), "an unknown field of a ScaledObject is caught"
    scaled["spec"].pop("maxReplicas")
    scaled["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    assert keda_problems(scaled) == ["the kafka scaler has no lagTreshold"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_deployment_per_stage_and_per_delivery_topic_each_scaled_by_its_groups_lag(example):
    documents = list(rendered(example))
    deployments, scaled = of_kind(documents, "Deployment"), of_kind(documents, "ScaledObject")
    settings = Settings.from_environ(SERVICES)
    catalog = load_catalog(example_catalog_path(example), {}, connections=False)
    partitions = {spec.name: spec.partitions for spec in topic_catalog(catalog)}
    stages = pipeline_stages(catalog, settings.namespace, settings.streams_app_id)
    delivery_groups = [spec for stage in stages if stage.name.startswith("deliver:") for spec in stage.groups]
    other_stages = [stage for stage in stages if not stage.name.startswith("deliver:")]
    assert len(deployments) == len(other_stages) + len(delivery_groups) + 2  # the API and the ingest
    assert len(scaled) == len(delivery_groups)
    by_group = {s["spec"]["triggers"][0]["metadata"]["consumerGroup"]: s for s in scaled.values()}
    for spec in delivery_groups:
        trigger_of = by_group[spec.group]
        metadata = trigger_of["spec"]["triggers"][0]["metadata"]
        assert (metadata["topic"],) == spec.topics
        assert metadata["bootstrapServers"] == SERVICES["HERALD_KAFKA_BOOTSTRAP"]
        assert trigger_of["spec"]["minReplicaCount"] == 1
        assert trigger_of["spec"]["maxReplicaCount"] == partitions[spec.topics[0]]
        target = deployments[trigger_of["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], "KEDA owns a scaled Deployment's replicas"
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        tier = int(args[args.index("--tier") + 1])
        assert spec.topics[0].endswith("" if tier == 0 else f".retry.{tier}")
    for stage in other_stages:
        assert any(d["spec"]["template"]["spec"]["containers"][0]["args"] == stage.command.split()[1:]
                   for d in deployments.values()), stage.name


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_container_runs_a_command_the_cli_parses(example):
    for document in list(rendered(example)):
        if document["kind"] not in ("Deployment", "Job"):
            continue
        argv = document["spec"]["template"]["spec"]["containers"][0]["args"]
        command = CLI
        while isinstance(command, typer.core.TyperGroup) and argv and argv[0] in command.commands:
            command, argv = command.commands[argv[0]], argv[1:]
        assert not isinstance(command, typer.core.TyperGroup), document["metadata"]["name"]
        context = command.make_context(command.name, list(argv))  # raises on a bad option or value
        assert context.command is command


def test_the_pods_catalog_is_the_whole_catalog(tmp_path):
    """The ConfigMap's files, laid out as the pod's volume lays them out, load as the catalog."""
    for example in EXAMPLES:
        documents = list(rendered(example))
        job = next(iter(of_kind(documents, "Job").values()))
        volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "catalog")
        files = of_kind(documents, "ConfigMap")[volume["configMap"]["name"]]["data"]
        for item in volume["configMap"]["items"]:
            target = tmp_path / example / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[item["key"]])
        settings_map = settings_config_map(documents)
        in_pod = tmp_path / example / Path(settings_map["data"]["HERALD_CATALOG"]).name
        original = load_catalog(example_catalog_path(example), {}, connections=False)
        assert load_catalog(in_pod, {}, connections=False).model_dump(exclude={"source"}) == \
            original.model_dump(exclude={"source"})


def test_settings_are_copied_but_never_a_secret_nor_this_machines_paths():
    secrets = {"HERALD_DATABASE_URL": "postgresql+psycopg2://herald:s3cr3t-pw@db/herald",
               "HERALD_INGEST_SECRETS": "ingest-hmac-s3cr3t", "HERALD_HOME": "/home/me/.herald",
               "HERALD_KAFKA_HEAP_MB": "2048", "HERALD_NAMESPACE": "prod", "HERALD_LOG_FORMAT": "json"}
    documents = list(rendered("registrations", {**SERVICES, **secrets}))
    text = yaml.safe_dump_all(documents)
    assert "s3cr3t" not in text and "/home/me" not in text
    config = settings_config_map(documents)["data"]
    assert config["HERALD_NAMESPACE"] == "prod" and config["HERALD_LOG_FORMAT"] == "json"
    assert "HERALD_KAFKA_HEAP_MB" not in config and config["HERALD_HOME"] == "/var/lib/herald"
    Settings.from_environ(config)  # every name a setting, every value parses
    groups = [s["spec"]["triggers"][0]["metadata"] for s in of_kind(documents, "ScaledObject").values()]
    assert all(g["consumerGroup"].startswith("prod.") and g["topic"].startswith("prod.") for g in groups)


def test_an_otlp_endpoint_reaches_every_stage():
    documents = list(rendered("tasks", otlp_endpoint="http://otel-collector.observability:4318"))
    config = settings_config_map(documents)["data"]
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in settings_config_map(list(rendered("tasks")))["data"]


def test_the_secret_is_referenced_and_what_it_holds_is_named():
    path = example_catalog_path("payments")
    catalog = load_catalog(path, {}, connections=False)
    documents, header = render_manifests(Settings.from_environ(SERVICES), catalog, path,
                                         catalog_variables(path),
                                         K8sOptions(image="herald:1", secret="herald-payments"))
    required = "required: HERALD_DATABASE_URL, HERALD_INGEST_SECRETS, PAYMENT_WEBHOOK_SECRETS"
    assert required in "\n".join(header)
    for document in documents:
        if document["kind"] in ("Deployment", "Job"):
            env_from = document["spec"]["template"]["spec"]["containers"][0]["envFrom"]
            assert {"secretRef": {"name": "herald-payments"}} in env_from


def test_rendering_needs_the_addresses_the_pods_reach():
    with pytest.raises(ManifestError, match="HERALD_KAFKA_BOOTSTRAP and HERALD_SCHEMA_REGISTRY_URL"):
        list(rendered("tasks", {}))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    result = subprocess.run([sys.executable, "-m", "herald.ops.cli", "k8s", "render", "--image", "herald:1"],
                            env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "set HERALD_KAFKA_BOOTSTRAP and" in result.stderr
    assert result.stdout == ""


def test_a_changed_catalog_gets_new_config_map_and_job_names(tmp_path):
    """Pods roll on a catalog change, and the setup Job (whose template cannot change) is new."""
    source = example_catalog_path("tasks").parent
    for path in source.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            (tmp_path / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path.relative_to(source)).write_bytes(path.read_bytes())
    settings = Settings.from_environ(SERVICES)

    def names(path: Path) -> set[str]:
        catalog = load_catalog(path, {}, connections=False)
        documents, _ = render_manifests(settings, catalog, path, {}, K8sOptions(image="herald:1"))
        return {d["metadata"]["name"] for d in documents if d["kind"] in ("ConfigMap", "Job")}

    before = names(tmp_path / "catalog.yaml")
    template = next((tmp_path / "templates").glob("*.j2"))
    template.write_text(template.read_text() + "\n")
    after = names(tmp_path / "catalog.yaml")
    assert len(before) == 3 and len(before & after) == 1, "only the settings ConfigMap stays"


def test_the_cli_writes_the_file_and_names_the_secret(tmp_path):
    out = tmp_path / "herald.yaml"
    result = subprocess.run([sys.executable, "-m", "herald.ops.cli", "k8s", "render", "--image", "herald:1",
                             "--no-ingest", "--out", str(out)], env={**os.environ, **SERVICES},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "required: HERALD_DATABASE_URL" in result.stderr and "HERALD_INGEST_SECRETS" not in result.stderr
    documents = list(yaml.safe_load_all(out.read_text()))
    assert "herald-ingest" not in of_kind(documents, "Deployment")


RECORDING_KUBECTL = """#!{python}
import json, sys
with open({log!r}, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def selected(documents: list[dict], selector: str) -> set[str]:
    """The documents a label selector picks: `key in (a,b)` or `key=value`, comma-joined."""
    terms = re.findall(r"([\w./-]+)\s+in\s+\(([^)]*)\)|([\w./-]+)=([\w.-]+)", selector)
    picked = set()
    for document in documents:
        labels = document["metadata"].get("labels", {})
        if all(labels.get(key or key_eq) in ({v.strip() for v in values.split(",")} if key else {value})
               for key, values, key_eq, value in terms):
            picked.add(f"{document['kind']}/{document['metadata']['name']}")
    return picked


def test_readme_renders_and_applies_the_setup_before_the_stages(tmp_path):
    """README's block as written, with `herald` from this environment and a `kubectl` that
    records its arguments (no cluster here): each command selects what the text says."""
    (block,) = blocks("README.md", "## Kubernetes", "sh")
    bin_dir, log = tmp_path / "bin", tmp_path / "kubectl.log"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(RECORDING_KUBECTL.format(python=sys.executable, log=str(log)))
    (bin_dir / "kubectl").chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    environ["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}:{environ['PATH']}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    text = (tmp_path / "herald.yaml").read_text()
    documents = [d for d in yaml.safe_load_all(text) if d]
    namespace = calls[0][2]
    assert calls[0][:2] == ["create", "namespace"]
    assert {d["metadata"]["namespace"] for d in documents} == {namespace}
    secret = calls[1]
    required = re.search(r"^#\s+required: (.*)$", text, re.MULTILINE).group(1).split(", ")
    assert secret[:5] == ["-n", namespace, "create", "secret", "generic"]
    assert sorted(a.removeprefix("--from-literal=").split("=", 1)[0] for a in secret[6:]) == sorted(required)
    setup = calls[2]
    assert setup[:3] == ["apply", "-f", "herald.yaml"] and setup[3] == "-l"
    assert selected(documents, setup[4]) == {f"{d['kind']}/{d['metadata']['name']}" for d in documents
                                             if d["kind"] in ("ConfigMap", "Job")}
    wait = calls[3]
    assert wait[:4] == ["-n", namespace, "wait", "--for=condition=complete"] and wait[4] == "job"
    assert {name.split("/")[0] for name in selected(documents, wait[wait.index("-l") + 1])} == {"Job"}
    assert calls[4] == ["apply", "-f", "herald.yaml"] and len(calls) == 5
