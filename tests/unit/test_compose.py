"""docker-compose.yml cannot run here (no Docker engine): check all that can be checked."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
import typer
import yaml

from herald.infra.registry_local import CCOMPAT_PATH, DATABASE, jdbc_settings
from herald.infra.settings import Settings
from herald.ops.cli import app
from tests.containers import apache_kafka_env

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
HERALD_IMAGE, SIMULATORS_IMAGE = "herald:local", "herald-simulators:local"
HERALD_SERVICES = {name: s for name, s in SERVICES.items()
                   if s.get("image") in (HERALD_IMAGE, SIMULATORS_IMAGE)}
KAFKA_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("apache/kafka:")}
CLI = typer.main.get_command(app)


def test_three_kraft_brokers_of_the_pinned_release():
    assert len(KAFKA_SERVICES) == 3
    default_version = Settings.from_environ({}).kafka_version
    assert {s["image"] for s in KAFKA_SERVICES.values()} == {f"apache/kafka:{default_version}"}
    node_ids = {s["environment"]["KAFKA_NODE_ID"] for s in KAFKA_SERVICES.values()}
    assert node_ids == {"1", "2", "3"}
    for name, service in KAFKA_SERVICES.items():
        env = service["environment"]
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(voters) == [f"{n}@kafka-{n}:9093" for n in (1, 2, 3)]


def test_replication_factor_three_and_min_isr_two():
    for service in KAFKA_SERVICES.values():
        env = service["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert all(s["environment"]["HERALD_REPLICATION_FACTOR"] == "3" for s in HERALD_SERVICES.values())


def test_every_herald_process_is_a_service():
    commands = [" ".join(s["command"]) for s in HERALD_SERVICES.values()]
    for expected in ("up", "relay", "ingest", "streams", "streams --processor missing",
                     "streams --processor sessions", "streams --processor status", "corrections",
                     "deliver --channel whatsapp",
                     "deliver --channel email", "simulator --kind whatsapp", "simulator --kind email",
                     "dlq index", "notifications index", "api"):
        assert any(c == expected or c.startswith(expected + " ") for c in commands), expected


@pytest.mark.parametrize("name", sorted(HERALD_SERVICES))
def test_service_command_and_options_exist_in_the_cli(name):
    argv = HERALD_SERVICES[name]["command"]
    assert argv[0] in CLI.commands, f"{name}: no `herald {argv[0]}`"
    command = CLI.commands[argv[0]]
    options = {opt for param in command.params for opt in param.opts}
    used = [arg for arg in argv[1:] if arg.startswith("--")]
    assert set(used) <= options, f"{name}: unknown options {set(used) - options}"
    # Parses as the CLI would (raises on a missing option or a value of the wrong type).
    context = command.make_context(argv[0], list(argv[1:]))
    assert context.command is command


@pytest.mark.parametrize("name", sorted(HERALD_SERVICES))
def test_service_environment_names_are_settings(name):
    env = HERALD_SERVICES[name]["environment"]
    settings = Settings.from_environ(env)  # raises on an unknown HERALD_* name
    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert settings.database_url and "@postgres:5432/" in settings.database_url


def _port(service: dict) -> str:
    return service["command"][service["command"].index("--port") + 1]


def test_simulator_urls_point_at_simulator_services():
    env = next(iter(HERALD_SERVICES.values()))["environment"]
    assert env["EMAIL_PROVIDER_URL"] == f"http://simulator-email:{_port(SERVICES['simulator-email'])}"
    instances = env["WHATSAPP_GATEWAY_URLS"].split(",")
    gateways = sorted(name for name in SERVICES if name.startswith("gateway-"))
    assert len(gateways) >= 2, "failover needs more than one gateway instance"
    assert instances == [f"http://{name}:{_port(SERVICES[name])}" for name in gateways]


def test_the_default_catalog_reads_its_providers_from_the_services_environment():
    from herald.infra.catalogs import read_catalog
    from herald.schemas.catalog_refs import connection_list

    env = next(iter(HERALD_SERVICES.values()))["environment"]
    catalog = read_catalog(None, env)
    assert connection_list(catalog.channels["whatsapp"], "instances") == tuple(
        env["WHATSAPP_GATEWAY_URLS"].split(","))
    assert catalog.channels["email"].connection["url"] == env["EMAIL_PROVIDER_URL"]


def test_gateway_instances_report_their_sessions_under_the_url_sessions_name():
    instances = next(iter(HERALD_SERVICES.values()))["environment"]["WHATSAPP_GATEWAY_URLS"].split(",")
    for name in (n for n in SERVICES if n.startswith("gateway-")):
        argv = SERVICES[name]["command"]
        assert float(argv[argv.index("--report-interval-s") + 1]) > 0, name
        assert argv[argv.index("--advertised-url") + 1] in instances, name
        assert SERVICES[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


def test_gateway_instances_share_one_message_store():
    stores = {SERVICES[name]["command"][SERVICES[name]["command"].index("--store") + 1]
              for name in SERVICES if name.startswith("gateway-")}
    assert len(stores) == 1, "the Idempotency-Key must hold across instances"


def test_processes_wait_for_setup_and_setup_waits_for_healthy_services():
    setup = SERVICES["setup"]["depends_on"]
    assert {name for name, dep in setup.items() if dep["condition"] == "service_healthy"} == {
        *KAFKA_SERVICES, "postgres", "schema-registry"}
    for name in ("relay", "streams", "deliver-whatsapp", "deliver-email", "corrections"):
        assert SERVICES[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


def dockerfile_stages() -> dict[str, str]:
    """Each build stage of the Dockerfile by its name, with its lines."""
    stages: dict[str, str] = {}
    for part in (ROOT / "infra/docker/Dockerfile").read_text().split("\nFROM ")[1:]:
        stages[part.splitlines()[0].rsplit(" AS ", 1)[1]] = part
    return stages


def test_the_production_image_has_every_package_but_no_proving_tool():
    stages = dockerfile_stages()
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copies = [line.split()[1] for line in stages["herald"].splitlines() if line.startswith("COPY ")]
    for folder in set(package_dirs.values()) - {"proving"}:
        assert folder in copies, folder
    proving = [path for path in copies if path.startswith("proving")]
    assert proving and all(path.endswith("__init__.py") for path in proving), \
        f"the production image copies proving modules: {proving}"
    for marker in proving:  # empty markers the package list needs: no code
        assert ast.get_docstring(ast.parse((ROOT / marker).read_text())) is not None
        assert len(ast.parse((ROOT / marker).read_text()).body) == 1, marker
    assert stages["simulators"].startswith("herald AS simulators")
    assert "COPY proving ./proving" in stages["simulators"]
    assert (ROOT / "constraints.txt").exists()


def test_simulators_run_from_their_own_image_and_the_pipeline_from_production():
    for name, service in HERALD_SERVICES.items():
        simulator = service["command"][0] == "simulator"
        assert service["image"] == (SIMULATORS_IMAGE if simulator else HERALD_IMAGE), name
        assert service["build"]["target"] == ("simulators" if simulator else "herald"), name


def test_test_container_kafka_config_matches_its_port():
    env = apache_kafka_env(39092)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:39092"
    assert env["KAFKA_LISTENERS"].startswith("PLAINTEXT://:39092,")


def test_docker_waits_for_a_process_longer_than_its_own_exit_deadline():
    herald = list(HERALD_SERVICES.values())
    grace_s = {float(service["stop_grace_period"].removesuffix("s")) for service in herald}
    assert grace_s and min(grace_s) > Settings().shutdown_timeout_s


def test_the_schema_registry_is_the_embedded_one_stored_the_same_way():
    """The release the embedded default runs, on PostgreSQL with the settings it is given
    there, in the database the init script creates, at the URL every Herald process reads."""
    registry = SERVICES["schema-registry"]
    assert registry["image"] == f"apicurio/apicurio-registry:{Settings.from_environ({}).registry_version}"
    herald_env = SERVICES["relay"]["environment"]
    expected = jdbc_settings(herald_env["HERALD_DATABASE_URL"])
    given = registry["environment"]
    assert {k: v for k, v in expected.items() if k in given} == given
    assert given["APICURIO_DATASOURCE_URL"].endswith(f"/{DATABASE}")
    init = (ROOT / "infra/docker/postgres-init.sql").read_text()
    assert f"CREATE DATABASE {DATABASE};" in init
    mounted = [v.split(":")[0] for v in SERVICES["postgres"]["volumes"] if "initdb" in v]
    assert (ROOT / mounted[0]).resolve() == ROOT / "infra/docker/postgres-init.sql"
    assert herald_env["HERALD_SCHEMA_REGISTRY_URL"] == f"http://schema-registry:8080{CCOMPAT_PATH}"
    assert registry["ports"] == ["127.0.0.1:8080:8080"], "analysts reach it from the host only"


def _compose_default(value: str) -> str:
    """`${VARIABLE:-default}` as Compose fills it when the variable is unset."""
    return value.split(":-", 1)[1].rstrip("}") if value.startswith("${") else value


def test_the_catalog_defaults_to_the_registrations_example_in_the_image():
    env = next(iter(HERALD_SERVICES.values()))["environment"]
    in_image = Path(_compose_default(env["HERALD_CATALOG"]))
    assert in_image.parts[:2] == ("/", "app"), "the Dockerfile's WORKDIR, where examples/ is copied"
    assert (ROOT / in_image.relative_to("/app")) == ROOT / "examples/registrations/catalog.yaml"


def test_the_tasks_example_sends_its_email_to_the_smtp_simulator():
    from herald.infra.catalogs import example_catalog_path, open_catalog

    env = next(iter(HERALD_SERVICES.values()))["environment"]
    sink = SERVICES["simulator-smtp"]["command"]
    connection = open_catalog(example_catalog_path("tasks"), env).channels["email"].connection
    assert (connection["host"], connection["port"]) == ("simulator-smtp", sink[sink.index("--smtp-port") + 1])
    assert connection["security"] == "none"


def test_the_payments_example_runs_under_its_profile_with_secrets_from_the_host():
    from herald.infra.catalogs import example_catalog_path, open_catalog

    env = next(iter(HERALD_SERVICES.values()))["environment"]
    assert env["PAYMENT_WEBHOOK_SECRETS"] == "${PAYMENT_WEBHOOK_SECRETS:-}", "never a secret in the file"
    secret = "whsec_" + "c2VjcmV0LW9mLWF0LWxlYXN0LTE2LWJ5dGVz"
    catalog = open_catalog(example_catalog_path("payments"), {**env, "PAYMENT_WEBHOOK_SECRETS": secret})
    assert "merchants" in catalog.channels
    assert SERVICES["deliver-merchants"]["command"] == ["deliver", "--channel", "merchants"]
    profiles = {SERVICES[name]["profiles"][0] for name in ("deliver-merchants", "simulator-webhook")}
    assert profiles == {"payments"}


def test_postgres_keeps_commit_timestamps_as_the_embedded_server_does():
    """The demo's hops start at PostgreSQL's commit timestamps (`proving/demo.py`)."""
    assert SERVICES["postgres"]["command"] == ["postgres", "-c", "track_commit_timestamp=on"]
