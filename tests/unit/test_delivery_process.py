"""A `herald deliver` process: a failing worker stops its siblings and the process fails loudly."""

import threading

import pytest

from herald.infra.settings import Settings, SettingsError
from herald.ops.delivery_process import RETRY_SETTINGS, DeliveryProcess, retry_policies


class FailingWorker:
    def run(self, stop: threading.Event, drain: bool) -> None:
        raise RuntimeError("fatal Kafka error")


class PatientWorker:
    def __init__(self) -> None:
        self.stopped = False

    def run(self, stop: threading.Event, drain: bool) -> None:
        assert stop.wait(10), "never told to stop"
        self.stopped = True


def test_a_failing_worker_stops_its_siblings_and_its_error_is_raised(monkeypatch):
    process = DeliveryProcess(Settings.from_environ({}), "127.0.0.1:9", "email", (0, 1))
    patient = PatientWorker()
    workers = iter([patient, FailingWorker()])
    monkeypatch.setattr(process, "build_worker", lambda _topic: next(workers))
    with pytest.raises(RuntimeError, match="fatal Kafka error"):
        process.run(threading.Event())
    assert patient.stopped


def test_an_unknown_tier_or_channel_is_refused():
    with pytest.raises(ValueError, match="no tier 4"):
        DeliveryProcess(Settings.from_environ({}), "b:1", "email", (4,))
    with pytest.raises(ValueError, match="unknown channel 'sms'"):
        DeliveryProcess(Settings.from_environ({}), "b:1", "sms")


def test_bad_retry_settings_name_their_variables():
    settings = Settings.from_environ({"HERALD_EMAIL_BACKOFF_JITTER": "gentle"})
    with pytest.raises(SettingsError, match="HERALD_EMAIL_BACKOFF_JITTER"):
        retry_policies(settings)
    too_many = Settings.from_environ({"HERALD_WHATSAPP_RETRY_TIERS_S": "1,2,3,4"})
    with pytest.raises(SettingsError, match="at most 3 retry tiers"):
        retry_policies(too_many)


def test_each_channels_policy_comes_from_its_own_settings():
    settings = Settings.from_environ({"HERALD_EMAIL_MAX_ATTEMPTS": "3",
                                      "HERALD_WHATSAPP_BACKOFF_JITTER": "decorrelated",
                                      "HERALD_WHATSAPP_RETRY_TIERS_S": "1,60"})
    policies = retry_policies(settings)
    assert sorted(policies) == ["email", "whatsapp"]
    assert (policies["email"].max_attempts, policies["email"].jitter) == (3, "full")
    assert (policies["whatsapp"].tiers_s, policies["whatsapp"].jitter) == ((1.0, 60.0), "decorrelated")
    assert policies["whatsapp"].max_attempts == settings.whatsapp_max_attempts
    # Every name an error message gives is a real setting of each channel.
    for channel in policies:
        assert all(hasattr(settings, f"{channel}_{suffix}") for suffix in RETRY_SETTINGS)
