"""A `herald deliver` process: a failing worker stops its siblings and the process fails loudly."""

import threading

import pytest

from herald.consumers.retry_policy import Jitter
from herald.infra.settings import Settings
from herald.ops.delivery_process import DeliveryProcess, retry_policy
from tests.catalogs import example, written_catalog


class FailingWorker:
    def run(self, stop: threading.Event, drain: bool) -> None:
        raise RuntimeError("fatal Kafka error")


class PatientWorker:
    def __init__(self) -> None:
        self.stopped = False

    def run(self, stop: threading.Event, drain: bool) -> None:
        assert stop.wait(10), "never told to stop"
        self.stopped = True


class QuietFeed:
    """channels.control with no change on it."""

    def stop(self) -> None:
        pass


def test_a_failing_worker_stops_its_siblings_and_its_error_is_raised(monkeypatch):
    process = DeliveryProcess(Settings.from_environ({}), example(), "127.0.0.1:9", "email", (0, 1))
    patient = PatientWorker()
    workers = iter([patient, FailingWorker()])
    monkeypatch.setattr(process, "build_worker", lambda _topic: next(workers))
    monkeypatch.setattr(process, "follow", lambda _topic, _apply: QuietFeed())
    with pytest.raises(RuntimeError, match="fatal Kafka error"):
        process.run(threading.Event())
    assert patient.stopped


def test_an_unknown_tier_or_channel_is_refused():
    with pytest.raises(ValueError, match="no tier 4"):
        DeliveryProcess(Settings.from_environ({}), example(), "b:1", "email", (4,))
    with pytest.raises(ValueError, match="unknown channel 'sms'; the catalog declares: whatsapp, email"):
        DeliveryProcess(Settings.from_environ({}), example(), "b:1", "sms")


def test_each_channels_policy_comes_from_its_catalog_entry(tmp_path):
    def change(document):
        document["channels"]["email"]["retry"] = {"max_attempts": 3, "jitter": "equal"}
        document["channels"]["whatsapp"]["retry"].update(tiers=["1s", "1m"], jitter="decorrelated")
    _path, catalog = written_catalog(tmp_path, change)
    email, whatsapp = (retry_policy(catalog.channels[c].retry) for c in ("email", "whatsapp"))
    assert (email.max_attempts, email.jitter, email.tiers_s) == (3, Jitter.EQUAL, (5.0, 30.0, 300.0))
    assert (whatsapp.tiers_s, whatsapp.jitter, whatsapp.max_attempts) == ((1.0, 60.0), Jitter.DECORRELATED, 8)
