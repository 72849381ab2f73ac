"""The embedded schema registry's parts that need no server: finding a Java 21, its storage
settings, and a home where it does not run."""

from __future__ import annotations

from pathlib import Path

from herald.infra.registry_local import EmbeddedRegistry, jdbc_settings
from herald.infra.system_packages import find_java


def runtime(root: Path, name: str, version: str) -> Path:
    """A JDK laid out as Debian's packages and Temurin's do: a folder with `release` and bin/java."""
    folder = root / name
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "java").write_text("")
    (folder / "release").write_text(f'IMPLEMENTOR="x"\nJAVA_VERSION="{version}"\n')
    return folder / "bin" / "java"


def test_the_newest_java_of_at_least_the_version_asked_is_found(tmp_path):
    runtime(tmp_path, "java-17-openjdk-amd64", "17.0.15")
    newest = runtime(tmp_path, "temurin-25-jdk-amd64", "25.0.3")
    runtime(tmp_path, "java-21-openjdk-amd64", "21.0.8")
    (tmp_path / "java-1.25-alias").symlink_to(tmp_path / "temurin-25-jdk-amd64")
    assert find_java(21, tmp_path) == newest
    assert find_java(26, tmp_path) is None


def test_only_java_17_means_none_for_the_registry(tmp_path):
    runtime(tmp_path, "java-17-openjdk-amd64", "17.0.15")
    assert find_java(21, tmp_path) is None
    assert find_java(17, tmp_path) is not None


def test_its_storage_is_a_database_of_its_own_on_herald_s_postgresql():
    settings = jdbc_settings("postgresql+psycopg2://herald:s3cret@127.0.0.1:5544/herald")
    assert settings["APICURIO_STORAGE_KIND"] == "sql"
    assert settings["APICURIO_STORAGE_SQL_KIND"] == "postgresql"
    assert settings["APICURIO_DATASOURCE_URL"] == "jdbc:postgresql://127.0.0.1:5544/herald_registry"
    assert (settings["APICURIO_DATASOURCE_USERNAME"], settings["APICURIO_DATASOURCE_PASSWORD"]) == (
        "herald", "s3cret")


def test_a_home_where_it_never_ran_has_no_state_and_nothing_to_stop(tmp_path):
    registry = EmbeddedRegistry(tmp_path, "3.3.3", 256)
    assert registry.state() is None
    assert registry.stop() is False
