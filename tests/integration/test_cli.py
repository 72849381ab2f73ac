"""The `herald` command as a user meets it: up, status, down, and clear failures."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from herald.infra import kafka_local
from herald.infra.kafka_io import RDKAFKA_LOG
from herald.infra.processes import free_port
from herald.infra.provisioning import delete_namespace_topics, provision_topics
from herald.schemas.catalog import TopicSpec, topic_catalog
from tests.catalogs import example
from tests.support import HERALD


def herald(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run([*HERALD, *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_up_status_down_on_a_private_home(base_settings, tmp_path):
    env = {"HERALD_HOME": str(tmp_path / "home"), "HERALD_MAVEN_REPO": str(base_settings.home / "m2"),
           "HERALD_KAFKA_HEAP_MB": "384"}
    try:
        up = herald("up", env=env)
        assert up.returncode == 0, up.stderr
        assert "kafka    127.0.0.1:" in up.stderr and "postgres postgresql" in up.stderr, up.stderr
        assert "registry http://127.0.0.1:" in up.stderr and "/apis/ccompat/v7" in up.stderr, up.stderr
        status = herald("status", env=env)
        assert "embedded 4.3.1" in status.stdout, status.stdout
        report = json.loads(herald("status", "--json", env=env).stdout)
        assert [(s["service"], s["state"]) for s in report["services"]] == [
            ("kafka", "embedded 4.3.1"), ("postgres", "embedded"),
            ("schema registry", "embedded Apicurio 3.3.3")]
        stages = {s["stage"]: (s["state"], s["where"]) for s in report["stages"]}
        assert stages["router"] == ("stopped", "start: herald streams --processor router"), stages
        assert stages["relay"] == ("stopped", "start: herald relay"), "each stage, and how to start it"
        again = herald("up", env=env)  # idempotent: reuses what runs
        assert again.returncode == 0, again.stderr
        assert again.stderr.splitlines()[-3:] == up.stderr.splitlines()[-3:], (up.stderr, again.stderr)
    finally:
        down = herald("down", "--purge", env=env)
    assert down.returncode == 0 and "stopped: schema registry, kafka, postgres" in down.stderr, down.stderr
    after = herald("status", env=env).stdout
    assert after.count("stopped") == 3, after
    assert not list((tmp_path / "home" / "kafka").glob("data/*"))


def test_up_with_three_brokers_provisions_the_catalog_with_three_replicas(base_settings, tmp_path):
    env = {"HERALD_HOME": str(tmp_path / "home"), "HERALD_MAVEN_REPO": str(base_settings.home / "m2"),
           "HERALD_KAFKA_HEAP_MB": "384", "HERALD_DATABASE_URL": "postgresql+psycopg2://unused/none"}
    try:
        up = herald("up", "--brokers", "3", env={**env, "HERALD_DATABASE_URL": _scratch_url(base_settings)})
        assert up.returncode == 0, up.stderr
        bootstrap = up.stderr.split("kafka", 1)[1].split()[0]
        assert len(bootstrap.split(",")) == 3, up.stderr
        admin = AdminClient({"bootstrap.servers": bootstrap, "logger": RDKAFKA_LOG})
        topics = admin.list_topics(timeout=10).topics
        assert {len(p.replicas) for t in topics.values() for p in t.partitions.values()} == {3}
        one = herald("up", "--brokers", "1", env=env)
        assert one.returncode == 1 and "of 3 broker(s) is running" in one.stderr, one.stderr
    finally:
        down = herald("down", "--purge", env=env)
    assert down.returncode == 0 and "kafka" in down.stderr, down.stderr
    assert not list((tmp_path / "home" / "kafka").glob("node-*/data/*"))


def _scratch_url(base_settings) -> str:
    """The session's database server (a test of `up` needs one, not a second embedded one)."""
    from herald.infra.services import resolve_database_url

    return resolve_database_url(base_settings)


def test_long_running_process_fails_fast_naming_the_missing_service(tmp_path):
    result = herald("relay", env={"HERALD_HOME": str(tmp_path)}, timeout=30)
    assert result.returncode == 1
    assert "Kafka is not running: start it with `herald up`" in result.stderr


def test_unreachable_configured_kafka_is_named(database_url):
    dead = f"127.0.0.1:{free_port()}"
    result = herald("deliver", "--channel", "email",
                    env={"HERALD_KAFKA_BOOTSTRAP": dead, "HERALD_DATABASE_URL": database_url}, timeout=60)
    assert result.returncode == 1
    assert f"Kafka at {dead} does not answer" in result.stderr


def test_relay_on_an_unmigrated_database_says_what_to_do(endpoints, namespace):
    server = sa.make_url(endpoints.database_url)
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{namespace}"'))
    try:
        url = server.set(database=namespace).render_as_string(hide_password=False)
        result = herald("relay", env={"HERALD_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
                                      "HERALD_DATABASE_URL": url}, timeout=60)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{namespace}" WITH (FORCE)'))
        admin.dispose()
    assert result.returncode == 1
    assert "the database has no outbox table: run `herald up`" in result.stderr


def test_unknown_setting_is_refused_before_anything_runs(tmp_path):
    result = herald("status", env={"HERALD_HOME": str(tmp_path), "HERALD_KAFKA_BOOTSTRAPS": "x"}, timeout=30)
    assert result.returncode == 2
    assert "unknown setting(s) HERALD_KAFKA_BOOTSTRAPS" in result.stderr


def test_provisioning_twice_changes_nothing(endpoints, namespace, topics):
    report = provision_topics(endpoints.kafka_bootstrap, topic_catalog(example(), namespace))
    assert report.created == ()
    assert len(report.existing) == len(topic_catalog(example(), namespace))


def test_provisioning_rolls_the_segments_of_a_changelog_made_before_it_named_a_roll(endpoints, namespace):
    made_before = TopicSpec(f"{namespace}.app-table-changelog", 2, "compact", -1, "key", "value")
    provision_topics(endpoints.kafka_bootstrap, (made_before,))
    rolled = dataclasses.replace(made_before, segment_ms=600_000)
    admin = AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap})

    def segment_ms() -> str:
        resource = ConfigResource(ResourceType.TOPIC, made_before.name)
        return admin.describe_configs([resource], request_timeout=10)[resource].result()["segment.ms"].value

    assert segment_ms() == "604800000"  # Kafka's default: a week, so never compacted in practice
    assert provision_topics(endpoints.kafka_bootstrap, (rolled,)).existing == (made_before.name,)
    assert segment_ms() == "600000"
    provision_topics(endpoints.kafka_bootstrap, (rolled,))  # aligned: nothing more to change
    assert segment_ms() == "600000"
    delete_namespace_topics(endpoints.kafka_bootstrap, namespace)


def test_deleting_a_namespace_takes_its_topics_only(endpoints, namespace):
    provision_topics(endpoints.kafka_bootstrap, topic_catalog(example(), f"{namespace}a"))
    provision_topics(endpoints.kafka_bootstrap, topic_catalog(example(), f"{namespace}b"))
    deleted = delete_namespace_topics(endpoints.kafka_bootstrap, f"{namespace}a")
    assert sorted(deleted) == sorted(spec.name for spec in topic_catalog(example(), f"{namespace}a"))
    left = set(AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap}).list_topics(timeout=10).topics)
    assert {spec.name for spec in topic_catalog(example(), f"{namespace}b")} <= left
    assert not any(name.startswith(f"{namespace}a") for name in left)
    assert len(delete_namespace_topics(endpoints.kafka_bootstrap, namespace)) == len(topic_catalog(example()))
    with pytest.raises(ValueError, match="empty namespace"):
        delete_namespace_topics(endpoints.kafka_bootstrap, "")


def test_a_cluster_id_starting_with_a_dash_formats_and_starts(private_broker, monkeypatch):
    # One id in 64 starts with "-"; a fresh clone's suite drew one and the tool took it for an option.
    monkeypatch.setattr(kafka_local, "new_cluster_id", lambda: "-" + "A" * 21)
    state = private_broker.start()
    meta = (private_broker.dir / "data" / "meta.properties").read_text()
    assert "cluster.id=-AAAAAAAAAAAAAAAAAAAAA\n" in meta, meta
    provision_topics(state.bootstrap, topic_catalog(example()))  # the broker answers
