"""A domain change and its event commit together or not at all, under concurrent writers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.examples.registrations.app import (
    InvalidTransition,
    Registration,
    RegistrationState,
    Transaction,
    UnknownRegistration,
    change_status,
    register,
)
from herald.producers.outbox import DomainEvent, emit
from herald.producers.sessions import InvalidSessionStatus, open_session, update_session
from herald.schemas.codec import SchemaViolation, decode
from herald.schemas.tables import OutboxRecord

# emit() encodes with the registry's schema ids: without this, a test passed only after another
# test of its worker had plugged the codec in (alone, each failed).
pytestmark = pytest.mark.usefixtures("topics")


def new_registration(transaction: Transaction, registration_id: str = "REG-1") -> RegistrationState:
    return register(transaction, registration_id=registration_id, participant_name="Dewi",
                    phone="+6281200000001", email="dewi@example.test")


@contextlib.contextmanager
def committing(engine: sa.Engine, kind: str) -> Iterator[Transaction]:
    """One transaction of the caller's kind: an ORM Session or a Core Connection."""
    if kind == "session":
        with Session(engine) as session, session.begin():
            yield session
    else:
        with engine.begin() as connection:
            yield connection


KINDS = pytest.mark.parametrize("kind", ["session", "connection"])


def counts(engine: sa.Engine) -> tuple[int, int]:
    with Session(engine) as session:
        return (session.scalar(sa.select(sa.func.count()).select_from(Registration)) or 0,
                session.scalar(sa.select(sa.func.count()).select_from(OutboxRecord)) or 0)


def outbox_events(engine: sa.Engine, key: str) -> list[dict]:
    with Session(engine) as session:
        rows = session.scalars(sa.select(OutboxRecord).where(OutboxRecord.message_key == key)
                               .order_by(OutboxRecord.id)).all()
        return [decode(row.payload).record for row in rows]


def test_status_change_commits_row_and_event_together(engine):
    with Session(engine) as session, session.begin():
        new_registration(session)
    with Session(engine) as session, session.begin():
        change_status(session, "REG-1", "payment_uploaded")
    events = outbox_events(engine, "REG-1")
    assert [e["status"] for e in events] == ["created", "payment_uploaded"]
    with Session(engine) as session:
        row = session.scalars(sa.select(OutboxRecord).limit(1)).one()
        assert row.headers["event-type"] == "registration.created"
        assert set(row.headers) == {"event-id", "event-type", "correlation-id", "traceparent", "produced-at"}


def test_rolled_back_change_leaves_no_event(engine):
    with Session(engine) as session, session.begin():
        new_registration(session)
    with Session(engine) as session:
        session.begin()
        change_status(session, "REG-1", "payment_uploaded")
        session.rollback()
    assert [e["status"] for e in outbox_events(engine, "REG-1")] == ["created"]
    with Session(engine) as session:
        assert session.get(Registration, "REG-1").status == "created"


def test_invalid_event_raises_naming_the_field_and_writes_nothing(engine):
    bad = DomainEvent(topic="registrations.events", key="REG-9", schema_name="herald.RegistrationEvent",
                      event_type="registration.created",
                      record={"event_id": "not-checked-here", "registration_id": "REG-9"})
    with pytest.raises(SchemaViolation, match="status"), Session(engine) as session, session.begin():
        new_registration(session, "REG-9")
        emit(session, bad)
    assert counts(engine) == (0, 0)


def test_an_event_emitted_on_a_connection_commits_and_rolls_back_with_the_callers_transaction(engine):
    with engine.connect() as connection:
        with connection.begin():
            created = new_registration(connection)
        assert counts(engine) == (1, 1)
        with pytest.raises(RuntimeError), connection.begin():
            change_status(connection, "REG-1", "payment_uploaded")
            raise RuntimeError("the caller gives up after the change")
        assert counts(engine) == (1, 1)
        with connection.begin():
            uploaded = change_status(connection, "REG-1", "payment_uploaded")
    events = outbox_events(engine, "REG-1")
    assert [(e["status"], e["phone"]) for e in events] == [
        ("created", created.phone), ("payment_uploaded", created.phone)]
    with Session(engine) as session:
        row = session.get(Registration, "REG-1")
        assert (row.status, row.status_changed_at) == ("payment_uploaded", uploaded.status_changed_at)


@KINDS
def test_a_change_of_an_unknown_registration_is_refused_by_name_and_writes_nothing(engine, kind):
    with pytest.raises(UnknownRegistration, match="no registration 'REG-404'"), \
            committing(engine, kind) as transaction:
        change_status(transaction, "REG-404", "payment_uploaded")
    assert counts(engine) == (0, 0)


def test_invalid_transition_is_refused_and_writes_nothing(engine):
    with Session(engine) as session, session.begin():
        new_registration(session)
    with pytest.raises(InvalidTransition, match="cannot go from 'created' to 'payment_verified'"), \
            Session(engine) as session, session.begin():
        change_status(session, "REG-1", "payment_verified")
    assert counts(engine) == (1, 1)


@KINDS
def test_concurrent_writers_race_on_one_registration(engine, kind):
    """Eight writers try to verify the same payment: exactly one wins, events stay in order."""
    with committing(engine, kind) as transaction:
        new_registration(transaction)
        change_status(transaction, "REG-1", "payment_uploaded")
    start = threading.Barrier(8)

    def verify(_n: int) -> str:
        start.wait()
        try:
            with committing(engine, kind) as transaction:
                change_status(transaction, "REG-1", "payment_verified")
            return "won"
        except InvalidTransition:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(verify, range(8)))
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]
    assert [e["status"] for e in outbox_events(engine, "REG-1")] == [
        "created", "payment_uploaded", "payment_verified"]


@KINDS
def test_many_concurrent_writers_lose_and_double_nothing(engine, kind):
    def lifecycle(n: int) -> None:
        registration_id = f"REG-{n:04d}"
        with committing(engine, kind) as transaction:
            new_registration(transaction, registration_id)
        for status in ("payment_uploaded", "payment_verified"):
            with committing(engine, kind) as transaction:
                change_status(transaction, registration_id, status)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lifecycle, range(200)))
    assert counts(engine) == (200, 600)
    with Session(engine) as session:
        distinct = session.scalar(sa.select(sa.func.count(sa.distinct(OutboxRecord.event_id))))
    assert distinct == 600


def test_session_changes_emit_the_whole_session_and_a_no_op_emits_nothing(engine):
    with Session(engine) as session, session.begin():
        open_session(session, session_id="webjs_1_a", workspace_id="1", gateway_instance="wa-1")
    with Session(engine) as session, session.begin():
        update_session(session, "webjs_1_a", status="connected", phone="+62811801641")
    with Session(engine) as session, session.begin():
        update_session(session, "webjs_1_a", gateway_instance="wa-2",
                       metadata={"reason": "instance crash", "auto_reconnect_at": "2026-11-22T10:00:00Z"})
    with Session(engine) as session, session.begin():
        update_session(session, "webjs_1_a", status="connected", gateway_instance="wa-2")  # nothing new
    with pytest.raises(InvalidSessionStatus, match="'online' is not one of"), \
            Session(engine) as session, session.begin():
        update_session(session, "webjs_1_a", status="online")
    events = outbox_events(engine, "webjs_1_a")
    assert [(e["status"], e["gateway_instance"], e["phone"]) for e in events] == [
        ("qr_pending", "wa-1", None), ("connected", "wa-1", "+62811801641"),
        ("connected", "wa-2", "+62811801641")]
    assert events[-1]["metadata"] == {"reason": "instance crash", "auto_reconnect_at": "2026-11-22T10:00:00Z"}
    with Session(engine) as session:
        types = session.scalars(sa.select(OutboxRecord.event_type)
                                .where(OutboxRecord.message_key == "webjs_1_a")
                                .order_by(OutboxRecord.id)).all()
    assert types == ["session.opened", "session.connected", "session.reassigned"]
