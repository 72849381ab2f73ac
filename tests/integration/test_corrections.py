"""A session correction reaches the database through the outbox, and never undoes a newer change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.consumers.corrections import InstanceCorrections
from herald.producers.sessions import open_session
from herald.schemas.tables import MessagingSession, OutboxRecord


def correction(instance: str, occurred_at: datetime) -> dict:
    return {"event_id": "e", "session_id": "s-1", "workspace_id": "ws", "phone": None, "status": "connected",
            "gateway_instance": instance, "occurred_at": occurred_at,
            "metadata": {"previous_instance": "http://wa-1", "corrected_by": "delivery", "other": "x"}}


def test_a_newer_correction_is_applied_through_the_outbox_and_an_older_one_skipped(engine):
    with Session(engine) as session, session.begin():
        open_session(session, session_id="s-1", workspace_id="ws", status="connected",
                     gateway_instance="http://wa-1")
    applier = InstanceCorrections()
    with Session(engine) as session, session.begin():
        later = datetime.now(UTC) + timedelta(seconds=1)
        applier.apply(session, correction("http://wa-2", later), "s-1", "c-1")
    with Session(engine) as session, session.begin():
        earlier = datetime.now(UTC) - timedelta(hours=1)
        applier.apply(session, correction("http://wa-3", earlier), "s-1", "c-2")
    with Session(engine) as session:
        row = session.get(MessagingSession, "s-1")
        events = session.scalars(sa.select(OutboxRecord.event_type).order_by(OutboxRecord.id)).all()
    assert row.gateway_instance == "http://wa-2", "the stale correction did not undo the newer one"
    assert row.metadata_ == {"previous_instance": "http://wa-1", "corrected_by": "delivery"}
    assert events == ["session.opened", "session.reassigned"], "the change left through the outbox"
    assert (applier.stats.applied, applier.stats.stale) == (1, 1)
