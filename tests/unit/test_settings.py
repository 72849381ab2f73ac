from pathlib import Path

import pytest

from herald.infra.settings import Settings, SettingsError, child_environ, documented_settings, env_name


def test_defaults_need_no_environment():
    settings = Settings.from_environ({})
    assert settings.kafka_bootstrap is None
    assert settings.kafka_version == "4.3.1"
    assert settings.home.is_absolute()


def test_values_are_parsed_to_their_declared_types():
    settings = Settings.from_environ({
        "HERALD_KAFKA_HEAP_MB": "256", "HERALD_RELAY_POLL_INTERVAL_S": "0.5",
        "HERALD_KAFKA_BOOTSTRAP": "broker:9092", "HERALD_HOME": "/tmp/h",
    })
    assert settings.kafka_heap_mb == 256
    assert settings.relay_poll_interval_s == 0.5
    assert settings.kafka_bootstrap == "broker:9092"
    assert settings.home == Path("/tmp/h")


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(SettingsError, match="HERALD_KAFKA_HEAPMB"):
        Settings.from_environ({"HERALD_KAFKA_HEAPMB": "1"})


def test_unparseable_value_names_variable_and_type():
    with pytest.raises(SettingsError, match=r"HERALD_RELAY_BATCH_SIZE='many' is not a valid int"):
        Settings.from_environ({"HERALD_RELAY_BATCH_SIZE": "many"})


def test_other_variables_are_ignored():
    assert Settings.from_environ({"PATH": "/bin", "HERALDRY": "x"}) == Settings.from_environ({})


def test_settings_are_frozen():
    settings = Settings.from_environ({})
    with pytest.raises(AttributeError):
        settings.namespace = "x"  # type: ignore[misc]


def test_to_environ_round_trips():
    settings = Settings.from_environ({"HERALD_NAMESPACE": "t1", "HERALD_DATABASE_URL": "postgresql://x/y"})
    assert Settings.from_environ(settings.to_environ()) == settings


def test_every_setting_is_documented():
    rows = documented_settings()
    assert len(rows) >= 10
    assert all(variable.startswith("HERALD_") and doc for variable, _default, doc in rows)
    assert env_name("kafka_bootstrap") == "HERALD_KAFKA_BOOTSTRAP"


def test_child_environ_replaces_inherited_settings():
    settings = Settings.from_environ({"HERALD_NAMESPACE": "t1"})
    env = child_environ(settings, {"PATH": "/bin", "HERALD_NAMESPACE": "stale", "HERALD_LOG_LEVEL": "DEBUG"},
                        kafka_bootstrap="k:1")
    assert env["PATH"] == "/bin"
    assert Settings.from_environ(env) == Settings.from_environ({"HERALD_NAMESPACE": "t1",
                                                                 "HERALD_KAFKA_BOOTSTRAP": "k:1"})


def test_a_list_setting_is_comma_separated_and_round_trips():
    settings = Settings.from_environ({"HERALD_HEALTH_STAGES": "relay, deliver:email",
                                      "HERALD_SESSION_AUTO_RECONNECT_WORKSPACES": "w1,w2"})
    assert settings.health_stages == ("relay", "deliver:email")
    assert settings.session_auto_reconnect_workspaces == ("w1", "w2")
    assert Settings.from_environ(settings.to_environ()) == settings
    with pytest.raises(SettingsError, match=r"HERALD_RELAY_POLL_INTERVAL_S='x' is not a valid float"):
        Settings.from_environ({"HERALD_RELAY_POLL_INTERVAL_S": "x"})


def test_the_catalog_setting_is_a_path_that_round_trips():
    settings = Settings.from_environ({"HERALD_CATALOG": "/etc/herald/catalog.yaml"})
    assert settings.catalog == Path("/etc/herald/catalog.yaml")
    assert Settings.from_environ(settings.to_environ()) == settings
