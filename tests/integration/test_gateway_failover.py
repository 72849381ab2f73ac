"""Seed 002 under load: a gateway instance crashes; every message to a session living elsewhere
arrives once, the database learns the new instance through the outbox, and a session that no
instance has any more fails as "session lost: reconnect needed"."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.producers.sessions import open_session
from herald.schemas import headers as h
from herald.schemas.tables import MessagingSession
from tests.integration.delivery_support import (
    dead_letters,
    fast_settings,
    header_dict,
    latest_statuses,
    produce_requests,
)
from tests.support import HERALD, process_env, simulator_network, wait_until


def declare_sessions(engine: sa.Engine, sessions: dict[str, tuple[str, str]]) -> None:
    """session id -> (workspace, instance URL), connected, in the database (events via the outbox)."""
    with Session(engine) as session, session.begin():
        for session_id, (workspace, instance) in sessions.items():
            open_session(session, session_id=session_id, workspace_id=workspace, status="connected",
                         phone="+628110000", gateway_instance=instance)


def declared_instance(engine: sa.Engine, session_id: str) -> tuple[str | None, dict[str, str]]:
    with Session(engine) as session:
        row = session.get(MessagingSession, session_id)
        assert row is not None
        return row.gateway_instance, dict(row.metadata_)


def test_a_gateway_instance_crash_under_load(settings, engine, log_dir):
    with simulator_network(log_dir) as (network, group):
        wa1, wa2 = network.whatsapp
        network.place_session(wa1, "s-1")
        network.place_session(wa2, "s-2")
        network.place_session(wa1, "s-3")
        declare_sessions(engine, {"s-1": ("ws-1", wa1), "s-2": ("ws-2", wa2), "s-3": ("ws-3", wa1)})
        for instance in network.whatsapp:
            network.faults(instance, latency_ms=30)
        configured = fast_settings(settings, network, concurrency=4)
        group.env = process_env(configured, network)
        group.start("relay", [*HERALD, "relay"])
        group.start("corrections", [*HERALD, "corrections"])
        group.start("deliver", [*HERALD, "deliver", "--channel", "whatsapp"])
        to_s1 = produce_requests(settings, "whatsapp", range(0, 1200, 2), workspace="ws-1")
        to_s2 = produce_requests(settings, "whatsapp", range(1, 1200, 2), workspace="ws-2")
        wait_until(lambda: network.accepted("whatsapp") >= 200, 90, "deliveries under way")

        network.place_session(wa2, "s-1")  # the session reconnected on wa-2 ...
        group.kill("simulator-wa-1")  # ... and wa-1 crashes
        assert network.accepted("whatsapp") < 1000, "the crash must land mid-stream"
        wait_until(lambda: network.accepted("whatsapp") >= 1200, 120,
                   "every message to a session living elsewhere")
        wait_until(lambda: declared_instance(engine, "s-1")[0] == wa2, 60,
                   "the correction to reach the database")

        network.restart(group, "wa-1", forget_sessions=True)  # back, without its sessions (seed 004)
        to_s3 = produce_requests(settings, "whatsapp", range(2000, 2010), workspace="ws-3")
        lost = dead_letters(settings, "whatsapp", 10)
        latest = latest_statuses(settings, 1210)
        messages = network.messages("whatsapp")

    delivered = Counter(m["notification_id"] for m in messages)
    assert set(delivered) == {r["notification_id"] for r in to_s1 + to_s2}, "lost"
    assert max(delivered.values()) == 1 and network_duplicates(messages) == 0, "doubled"
    after_crash = [m for m in messages if m["session_id"] == "s-1" and m["instance"] == "wa-2"]
    assert after_crash, "s-1's messages went to wa-2 after the crash"
    instance, metadata = declared_instance(engine, "s-1")
    assert (instance, metadata["previous_instance"], metadata["corrected_by"]) == (wa2, wa1, "delivery")
    assert declared_instance(engine, "s-2")[0] == wa2, "a session that did not move is untouched"

    assert len(lost) == 10
    for message in lost:
        headers = header_dict(message)
        assert headers[h.ERROR_CLASS] == "SessionLost"
        assert headers[h.ERROR_MESSAGE].startswith("session lost: reconnect needed")
    for request in to_s3:
        status = latest[request["notification_id"]]
        assert (status["status"], status["error_class"]) == ("dead_lettered", "SessionLost")
        assert status["error"].startswith("session lost: reconnect needed")


def network_duplicates(messages: list[dict]) -> int:
    per_person = Counter((m["subject_id"], m["template"], m["to"]) for m in messages)
    return sum(n - 1 for n in per_person.values())
