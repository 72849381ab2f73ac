"""Provisioning returns once the broker describes the segment roll it set, not merely once the
controller accepted it: a describe in between had read the old roll (a fresh-clone CI run)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from herald.infra import provisioning
from herald.schemas.catalog import TopicSpec

WEEK_MS, ROLL_MS = "604800000", "600000"


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class LaggingAdmin:
    """A broker that applies an altered config only after `lag` more describes."""

    def __init__(self, topic: str, lag: int) -> None:
        self.segment_ms, self.pending, self.lag, self.altered = {topic: WEEK_MS}, {}, lag, 0

    def list_topics(self, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics=dict.fromkeys(self.segment_ms))

    def describe_configs(self, resources: list, request_timeout: float) -> dict:
        if self.pending and self.lag == 0:
            self.segment_ms.update(self.pending)
            self.pending = {}
        self.lag -= bool(self.pending)
        return {r: _done({"segment.ms": SimpleNamespace(value=self.segment_ms[r.name])}) for r in resources}

    def incremental_alter_configs(self, resources: list, request_timeout: float) -> dict:
        self.altered += 1
        self.pending = {r.name: r.incremental_configs[0].value for r in resources}
        return {r: _done(None) for r in resources}


@pytest.mark.parametrize("lag", [0, 3])
def test_provisioning_returns_once_the_broker_describes_the_new_roll(monkeypatch, lag):
    spec = TopicSpec("app-table-changelog", 2, "compact", -1, "key", "value", segment_ms=int(ROLL_MS))
    admin = LaggingAdmin(spec.name, lag)
    monkeypatch.setattr(provisioning, "AdminClient", lambda _config: admin)
    report = provisioning.provision_topics("broker:9092", (spec,), timeout_s=5)
    assert report.existing == (spec.name,) and admin.altered == 1
    assert admin.segment_ms[spec.name] == ROLL_MS and not admin.pending


def test_an_aligned_roll_is_left_alone(monkeypatch):
    spec = TopicSpec("app-table-changelog", 2, "compact", -1, "key", "value", segment_ms=int(WEEK_MS))
    admin = LaggingAdmin(spec.name, 0)
    monkeypatch.setattr(provisioning, "AdminClient", lambda _config: admin)
    provisioning.provision_topics("broker:9092", (spec,), timeout_s=5)
    assert admin.altered == 0
