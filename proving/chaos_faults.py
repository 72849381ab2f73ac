"""The faults of `herald chaos`, one injector each: what broke the seeds' systems.

Each waits for the warm-up, injects its fault, clears it (or lets the pipeline route around
it) and marks the moment it cleared, from which recovery is measured. A process killed with
SIGKILL and started again stands for a supervisor (systemd, Kubernetes) restarting it; a
delivery worker is not restarted, since the seeds' pain was a dead worker nobody restarted.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import sqlalchemy as sa
from confluent_kafka import Producer

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.infra.deadline import Deadline, wait_until
from herald.infra.kafka_io import producer_config
from herald.infra.services import embedded_kafka, embedded_postgres
from herald.ops.launch import HERALD_ARGV
from herald.proving.chaos import ChaosRun, Injector
from herald.proving.demo import wait_for_groups
from herald.proving.demo_faults import DEMO_SESSION
from herald.schemas.catalog import consumer_group, notification_topic, qualified
from herald.schemas.tables import DeadLetter, MessagingSession

POISON_PER_TOPIC = 100
POISON_TOPICS = (REGISTRATION_EVENTS, notification_topic("whatsapp"), notification_topic("email"))


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # what a reader of the report is told was done
    inject: Injector
    long_fault: bool = False  # lasts the plan's outage (else a moment)
    needs_cluster: bool = False  # runs on a cluster of three brokers of its own
    stops: str = ""  # the embedded service it stops: kafka or postgres


def restarted_after_kill(process: str, argv: list[str]) -> Injector:
    def inject(run: ChaosRun) -> None:
        run.after_warmup()
        run.group.kill(process)
        run.group.start(process, [*HERALD_ARGV, *argv])
        run.cleared()
    return inject


def relay_mid_batch(run: ChaosRun) -> None:
    """SIGKILL the relay while rows wait in the outbox (a batch in flight), then start another."""
    run.after_warmup()
    engine = sa.create_engine(run.endpoints.database_url, poolclass=sa.pool.NullPool)
    try:
        wait_until(lambda: _outbox_rows(engine) > 0, 30, "rows waiting in the outbox")
        run.group.kill("relay")
        run.extra["outbox_rows_at_kill"] = _outbox_rows(engine)
    finally:
        engine.dispose()
    run.group.start("relay", [*HERALD_ARGV, "relay"])
    run.cleared()


def _outbox_rows(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one())


def delivery_worker(run: ChaosRun) -> None:
    """Two WhatsApp delivery workers share the group; one is killed and never restarted."""
    run.group.start("deliver-whatsapp-2", [*HERALD_ARGV, "deliver", "--channel", "whatsapp"])
    group_id = consumer_group("deliver", notification_topic("whatsapp"), run.settings.namespace)
    wait_for_groups(run.endpoints.kafka_bootstrap, [group_id], Deadline(60), run.group, members=2)
    run.after_warmup()
    run.group.kill("deliver-whatsapp")
    run.cleared()  # nobody restarts it: the survivor must take its partitions


def broker_stopped(run: ChaosRun) -> None:
    """The (single) broker stopped for the outage, then started on the same address."""
    kafka = embedded_kafka(run.settings)
    run.after_warmup()
    kafka.stop()
    time.sleep(run.plan.outage_s)
    kafka.start()
    run.cleared()


def postgres_restarted(run: ChaosRun) -> None:
    postgres = embedded_postgres(run.settings)
    run.after_warmup()
    postgres.stop()
    postgres.start()
    run.cleared()


def provider_down(run: ChaosRun) -> None:
    """The email provider's process killed, and started again after the outage."""
    run.after_warmup()
    run.group.kill("simulator-email")
    time.sleep(run.plan.outage_s)
    run.network.restart(run.group, "email")
    run.cleared()


def gateway_crash(run: ChaosRun) -> None:
    """Seed 002: the session reconnects on the second instance and the first dies; it comes
    back without its sessions. The pipeline must find the session where it lives now."""
    run.after_warmup()
    run.network.place_session(run.network.whatsapp[1], DEMO_SESSION)
    run.group.kill("simulator-wa-1")
    run.cleared()  # no one intervenes: the corrections must move the session by themselves
    run.network.restart(run.group, "wa-1", forget_sessions=True)
    run.extra["session_corrected_s"] = _seconds_until_declared_on(run, run.network.whatsapp[1])


def _seconds_until_declared_on(run: ChaosRun, instance: str) -> float | None:
    """How long after the crash the database named the session's new instance (None: not in 60 s)."""
    crashed_at_s = (run.cleared_at_ms or 0) / 1000
    engine = sa.create_engine(run.endpoints.database_url, poolclass=sa.pool.NullPool)
    query = sa.select(MessagingSession.gateway_instance).where(MessagingSession.session_id == DEMO_SESSION)
    try:
        deadline = Deadline(60)
        while not deadline.expired():
            with engine.connect() as connection:
                if connection.execute(query).scalar_one_or_none() == instance:
                    return round(time.time() - crashed_at_s, 1)
            time.sleep(0.2)
        return None
    finally:
        engine.dispose()


def poison_burst(run: ChaosRun) -> None:
    """Undecodable records in the event stream and both notification topics, among the good."""
    run.after_warmup()
    producer = Producer(producer_config(run.endpoints.kafka_bootstrap, 30))
    keys = []
    for topic in POISON_TOPICS:
        for n in range(POISON_PER_TOPIC):
            keys.append(f"poison-{run.prefix}{topic}-{n}")
            producer.produce(qualified(topic, run.settings.namespace), key=keys[-1].encode(),
                             value=b'{"not": "avro"}')
            producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("the poison records were not all acknowledged")
    run.cleared()
    run.extra["poison"] = len(keys)
    engine = sa.create_engine(run.endpoints.database_url, poolclass=sa.pool.NullPool)
    try:
        found = _dead_lettered(engine, keys)
        deadline = Deadline(run.plan.drain_s)
        while len(found) < len(keys) and not deadline.expired():
            time.sleep(0.5)
            found = _dead_lettered(engine, keys)
    finally:
        engine.dispose()
    run.extra["dead_lettered"] = len(found)
    run.extra["poison_unaccounted"] = len(keys) - len(found)


def _dead_lettered(engine: sa.Engine, keys: list[str]) -> set[str]:
    """Which of these keys the DLQ index holds (each poison record is counted once)."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(DeadLetter.key_text).where(DeadLetter.key_text.in_(keys)))
        return {row[0] for row in rows}


def broker_of_three(run: ChaosRun) -> None:
    """SIGKILL one broker of three for the outage: writes and deliveries must go on without it."""
    kafka = embedded_kafka(run.settings)
    state = kafka.state()
    if state is None or len(state.pids) != 3:
        raise RuntimeError("this scenario needs the embedded cluster of three brokers")
    run.after_warmup()
    os.kill(state.pids[1], signal.SIGKILL)
    run.cleared()  # nothing is restored: the two left must carry the load
    time.sleep(run.plan.outage_s)
    kafka.start()  # back for the rest of the run


def _scenarios() -> tuple[Scenario, ...]:
    return (
        Scenario("relay-kill", "kill -9 of the relay mid-batch, restarted", relay_mid_batch),
        Scenario("delivery-worker-kill", "kill -9 of one of two WhatsApp delivery workers, not restarted",
                 delivery_worker),
        Scenario("router-kill", "kill -9 of the router mid-batch, restarted",
                 restarted_after_kill("streams", ["streams"])),
        Scenario("broker-stop", "the broker stopped for the outage, then started", broker_stopped,
                 long_fault=True, stops="kafka"),
        Scenario("postgres-restart", "PostgreSQL stopped and started, writers retrying", postgres_restarted,
                 stops="postgres"),
        Scenario("provider-down", "the email provider down for the outage, then back", provider_down,
                 long_fault=True),
        Scenario("gateway-crash", "kill -9 of the gateway instance holding the session", gateway_crash),
        Scenario("poison-burst", f"{POISON_PER_TOPIC} undecodable records in each of "
                                 f"{len(POISON_TOPICS)} topics", poison_burst),
        Scenario("broker-of-three-kill", "kill -9 of one broker of three, down for the outage",
                 broker_of_three, long_fault=True, needs_cluster=True, stops="kafka"),
    )


SCENARIOS = {scenario.name: scenario for scenario in _scenarios()}
