"""Writers, in-thread relays and an audit of what reached the topic, for the relay tests."""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Message, Producer
from sqlalchemy.orm import Session

from herald.examples.registrations.app import TOPIC as REGISTRATION_EVENTS
from herald.examples.registrations.app import change_status, register
from herald.infra.kafka_io import producer_config
from herald.infra.settings import Settings
from herald.ops.bootstrap import relay_config
from herald.producers.outbox import outbox_backlog
from herald.producers.relay import Relay
from herald.producers.sessions import open_session, update_session
from herald.schemas import headers as h
from herald.schemas.catalog import SESSION_EVENTS, qualified
from herald.schemas.codec import decode
from herald.schemas.tables import MessagingSession
from tests.support import read_topic


def write_lifecycles(engine: sa.Engine, count: int, prefix: str = "REG", writers: int = 4) -> int:
    """`count` registrations taken to payment_uploaded by `writers` threads; returns events written."""
    def lifecycle(n: int) -> None:
        registration_id = f"{prefix}-{n:05d}"
        with Session(engine) as session, session.begin():
            register(session, registration_id=registration_id, participant_name="Rina",
                     phone="+6281300000000", email="rina@example.test")
        with Session(engine) as session, session.begin():
            change_status(session, registration_id, "payment_uploaded")

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(lifecycle, range(count)))
    return 2 * count


def open_sessions(engine: sa.Engine, keys: int) -> None:
    with Session(engine) as session, session.begin():
        for n in range(keys):
            open_session(session, session_id=session_key(n), workspace_id="1", metadata={"seq": "0"})


def session_key(n: int) -> str:
    return f"webjs_1_{n:04d}"


def bump_sequence(engine: sa.Engine, key: str) -> None:
    """One more event for `key`; under the row lock its `seq` is the previous one plus one."""
    with Session(engine) as session, session.begin():
        row = session.get(MessagingSession, key, with_for_update=True)
        assert row is not None
        update_session(session, key, metadata={"seq": str(int(row.metadata_["seq"]) + 1)})


def outbox_size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return outbox_backlog(conn).rows


def audit_lifecycles(records: list[Message], written: int) -> dict[str, int]:
    """Lost and duplicated events, and keys whose first occurrences are out of order."""
    seen, per_key = _first_occurrences(records)
    out_of_order = sum(1 for statuses in per_key.values()
                       if [r["status"] for r in statuses] != ["created", "payment_uploaded"])
    return {"lost": written - len(seen), "duplicated": sum(n - 1 for n in seen.values()),
            "out_of_order": out_of_order}


def audit_sequences(records: list[Message], expected: dict[str, int]) -> dict[str, int]:
    """Per session key, first occurrences must be seq 0, 1, ... up to its last value."""
    seen, per_key = _first_occurrences(records)
    out_of_order = 0
    for key, last in expected.items():
        got = [int(r["metadata"]["seq"]) for r in per_key.get(key.encode(), [])]
        if got != list(range(last + 1)):
            out_of_order += 1
    written = sum(last + 1 for last in expected.values())
    return {"lost": written - len(seen), "duplicated": sum(n - 1 for n in seen.values()),
            "out_of_order": out_of_order}


def _first_occurrences(records: list[Message]) -> tuple[dict[str, int], dict[bytes, list[dict[str, Any]]]]:
    seen: dict[str, int] = defaultdict(int)
    per_key: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
    for message in records:
        event_id = dict(message.headers())[h.EVENT_ID].decode()
        seen[event_id] += 1
        if seen[event_id] == 1:  # consumers drop repeats by event-id, as README says
            per_key[message.key()].append(decode(message.value()).record)
    return seen, per_key


def registration_records(settings: Settings, bootstrap: str, at_least: int) -> list[Message]:
    return read_topic(bootstrap, qualified(REGISTRATION_EVENTS, settings.namespace), at_least=at_least)


def session_records(settings: Settings, at_least: int) -> list[Message]:
    return read_topic(settings.kafka_bootstrap, qualified(SESSION_EVENTS, settings.namespace),
                      at_least=at_least, timeout_s=120)


@contextmanager
def running_relay(settings: Settings, bootstrap: str | None = None,
                  wrap_producer: Callable[[Producer], Any] | None = None,
                  **overrides: Any) -> Iterator[Relay]:
    """A relay in a thread of this process, stopped (and joined) on exit; `wrap_producer`, when
    given, stands between the relay and each producer it makes."""
    assert settings.database_url is not None
    engine = sa.create_engine(settings.database_url, poolclass=sa.NullPool)
    target = bootstrap or settings.kafka_bootstrap
    assert target is not None
    config = relay_config(settings)

    def make_producer() -> Any:
        producer = Producer(producer_config(target, config.flush_timeout_s))
        return producer if wrap_producer is None else wrap_producer(producer)

    relay = Relay(engine, make_producer, dataclasses.replace(config, **overrides))
    stop = threading.Event()
    runner = threading.Thread(target=relay.run, args=(stop,), name="relay")
    runner.start()
    try:
        yield relay
    finally:
        stop.set()
        runner.join(60)
        engine.dispose()
    assert not runner.is_alive(), "the relay did not stop"

