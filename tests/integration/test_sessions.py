"""The session reconciler end to end: gateway instances report their sessions, the reconciler
(its own Faust process) compares them with what the database declares, and `herald
corrections` applies its verdicts through the outbox.

- Seed 004: a gateway restarts without its sessions; they are marked disconnected and, where
  the workspace has auto-reconnect on, a reconnect is requested and recorded.
- Seed 002: an instance crashes and a session reappears on another; its instance is
  corrected. One that reappears nowhere is unobserved (nothing changed), a kill -9 of the
  reconciler neither repeats nor forgets a verdict, a drift is reported only, and a garbled
  session event goes to the DLQ without holding anything up.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections import Counter

import sqlalchemy as sa
from confluent_kafka import Producer
from sqlalchemy.orm import Session

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.settings import Settings
from herald.ops.pipeline import streams_app_id
from herald.producers.sessions import open_session
from herald.proving.demo import wait_for_groups
from herald.schemas.catalog import SESSION_EVENTS, SESSION_MISMATCHES, dead_letter_topic, qualified
from herald.schemas.codec import decode
from herald.schemas.tables import MessagingSession
from tests.support import HERALD, process_env, read_topic, simulator_network, wait_until

GRACE_S = 3.0


def reconciler_settings(settings: Settings, **overrides: object) -> Settings:
    defaults: dict[str, object] = {"session_grace_s": GRACE_S, "session_resync_interval_s": 0.5}
    return dataclasses.replace(settings, **{**defaults, **overrides})  # type: ignore[arg-type]


def declare(engine: sa.Engine, sessions: dict[str, tuple[str, str, str]]) -> None:
    """session id -> (workspace, status, instance URL), in the database (events via the outbox)."""
    with Session(engine) as session, session.begin():
        for session_id, (workspace, status, instance) in sessions.items():
            open_session(session, session_id=session_id, workspace_id=workspace, status=status,
                         phone="+628110000", gateway_instance=instance)


def rows(engine: sa.Engine) -> dict[str, MessagingSession]:
    with Session(engine) as session:
        return {r.session_id: r for r in session.scalars(sa.select(MessagingSession))}


def start_pipeline(group: ProcessGroup, settings: Settings, reconciler: str = "reconciler") -> None:
    group.env = process_env(settings)
    group.start("relay", [*HERALD, "relay"])
    group.start("corrections", [*HERALD, "corrections"])
    start_reconciler(group, settings, reconciler)


def start_reconciler(group: ProcessGroup, settings: Settings, name: str) -> None:
    group.start(name, [*HERALD, "streams", "--processor", "sessions"])
    wait_for_groups(settings.kafka_bootstrap, [streams_app_id(settings, "sessions")], Deadline(90), group,
                    members=1)


def mismatches(settings: Settings, idle_s: float = 1.0) -> list[tuple[str, str | None]]:
    """(session id, kind or None for a tombstone) in topic order per key."""
    records = read_topic(settings.kafka_bootstrap, qualified(SESSION_MISMATCHES, settings.namespace),
                         idle_s=idle_s)
    return [(m.key().decode(), None if m.value() is None else decode(m.value()).record["kind"])
            for m in records]


def test_seed_004_sessions_lost_by_a_restarted_gateway_are_disconnected_and_reconnected(
        settings, engine, log_dir):
    # A grace period longer than the gateway's restart takes: not unobserved on the way.
    settings = reconciler_settings(settings, session_grace_s=8.0,
                                   session_auto_reconnect_workspaces=("ws-auto",))
    with simulator_network(log_dir, reporting_to=settings) as (network, group):
        wa1, wa2 = network.whatsapp
        for session_id in ("s-1", "s-2", "s-3"):
            network.place_session(wa1, session_id)
        network.place_session(wa2, "s-4")
        declare(engine, {"s-1": ("ws-auto", "connected", wa1), "s-2": ("ws-auto", "connected", wa1),
                         "s-3": ("ws-manual", "connected", wa1), "s-4": ("ws-auto", "connected", wa2)})
        start_pipeline(group, settings)

        group.kill("simulator-wa-1")  # the seed's `pm2 restart whatsapp-service` ...
        network.restart(group, "wa-1", forget_sessions=True)  # ... back without its sessions

        def settled() -> bool:
            found = rows(engine)
            return (all(found[s].status == "disconnected" for s in ("s-1", "s-2", "s-3"))
                    and all("auto_reconnect_at" in found[s].metadata_ for s in ("s-1", "s-2")))

        wait_until(settled, 60, "lost sessions disconnected and reconnects recorded")
        found = rows(engine)
        assert found["s-4"].status == "connected" and found["s-4"].metadata_ == {}, "s-4 was never lost"
        for session_id in ("s-1", "s-2", "s-3"):
            metadata = found[session_id].metadata_
            assert "connected on no instance" in metadata["reason"] and metadata["auto_disconnected_at"]
        assert found["s-1"].metadata_["reconnect_triggered_by"] == "session-reconciler"
        assert "auto_reconnect_at" not in found["s-3"].metadata_, "auto-reconnect is off for ws-manual"
        assert [network.session_status(wa1, s) for s in ("s-1", "s-2", "s-3")] == [
            "qr_pending", "qr_pending", None], "the gateway was asked to reconnect s-1 and s-2 only"

        # Declared disconnected, waiting for a QR scan on wa-1: they agree again.
        wait_until(lambda: Counter(k for k, v in mismatches(settings) if v is None)
                   == {"s-1": 1, "s-2": 1, "s-3": 1}, 30, "every mismatch resolved by a tombstone")
        group.check_alive()
    lost = ("s-1", "s-2", "s-3")
    expected = {**{(s, "not_found"): 1 for s in lost}, **{(s, None): 1 for s in lost}}
    assert Counter(mismatches(settings)) == expected, "one verdict per lost session, one tombstone each"


def test_seed_002_a_crashed_instance_s_sessions_are_followed_and_verdicts_survive_a_kill(
        settings, engine, log_dir):
    settings = reconciler_settings(settings)
    with simulator_network(log_dir, reporting_to=settings) as (network, group):
        wa1, wa2 = network.whatsapp
        network.place_session(wa1, "moves")
        network.place_session(wa1, "stranded")
        network.place_session(wa2, "steady")
        network.place_session(wa2, "drifted")
        declare(engine, {"moves": ("ws", "connected", wa1), "stranded": ("ws", "connected", wa1),
                         "steady": ("ws", "connected", wa2), "drifted": ("ws", "disconnected", wa2)})
        start_pipeline(group, settings)

        poison = Producer(producer_config(settings.kafka_bootstrap, 30))
        poison.produce(qualified(SESSION_EVENTS, settings.namespace), b"not a session", b"garbled")
        assert poison.flush(30) == 0
        network.place_session(wa2, "moves")  # the session reconnects on wa-2 ...
        group.kill("simulator-wa-1")  # ... and wa-1 crashes, and stays down

        wait_until(lambda: rows(engine)["moves"].gateway_instance == wa2, 60, "the instance corrected")
        moved = rows(engine)["moves"]
        assert moved.status == "connected"
        assert moved.metadata_["previous_instance"] == wa1
        assert moved.metadata_["corrected_by"] == "session-reconciler"
        wait_until(lambda: ("stranded", "unobserved") in mismatches(settings), 30, "stranded unobserved")

        victim = group.processes["reconciler"]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        start_reconciler(group, settings, "reconciler")
        time.sleep(2 * GRACE_S)  # resyncs of the recovered table, any of which would repeat a verdict
        group.check_alive()

    found = rows(engine)
    assert (found["stranded"].status, found["stranded"].gateway_instance) == ("connected", wa1), \
        "unobserved changes nothing: wa-1 may come back with it"
    assert (found["drifted"].status, found["steady"].gateway_instance) == ("disconnected", wa2)
    assert Counter(mismatches(settings)) == {
        ("moves", "instance_moved"): 1, ("moves", None): 1,  # corrected, then resolved
        ("stranded", "unobserved"): 1,  # once, across the kill -9
        ("drifted", "status_drift"): 1,  # reported only
    }
    dead_letters = qualified(dead_letter_topic(SESSION_EVENTS), settings.namespace)
    dead = [(m.key(), dict(m.headers())["consumer-group"])
            for m in read_topic(settings.kafka_bootstrap, dead_letters)]
    assert dead == [(b"garbled", b"session-reconciler")]
