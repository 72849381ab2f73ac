"""The tasks example's domain app (seed 001's ticket-tracking workflow): assigning a task writes
its row and its `task.assigned` event in one transaction, through Herald's outbox.

Where seed 001 called `notify_task.delay()` after its commit and, when RabbitMQ was down,
caught the error into a `FailedNotification` row for a cron to retry, the event here commits
with the assignment or not at all: Kafka being down never fails the writer, and nothing
waits in a side table.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from herald.producers.outbox import DomainEvent, emit

TOPIC = "task.events"  # as catalog.yaml declares (the default: "<kind>.events")
SCHEMA = "tasks.TaskEvent"


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "example_tasks"

    task_id: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(255))
    user_id: Mapped[str | None] = mapped_column(sa.String(64))
    user_email: Mapped[str | None] = mapped_column(sa.String(320))
    role_name: Mapped[str | None] = mapped_column(sa.String(100))
    assigned_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


def create_tables(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine, checkfirst=True)


def assign(session: Session, *, task_id: str, title: str, user_id: str, user_email: str, role_name: str,
           correlation_id: str | None = None) -> Task:
    """Assign a task (creating it if new): the row and its event, in the caller's transaction."""
    task = session.get(Task, task_id, with_for_update=True)
    action = "assigned" if task is None or task.user_id is None else "reassigned"
    if task is None:
        task = Task(task_id=task_id, title=title)
        session.add(task)
    task.user_id, task.user_email, task.role_name = user_id, user_email, role_name
    task.assigned_at = datetime.now(UTC)
    emit(session, DomainEvent(topic=TOPIC, key=task_id, schema_name=SCHEMA, event_type=f"task.{action}",
                              record={"event_id": str(uuid.uuid4()), "task_id": task_id, "task_title": title,
                                      "user_id": user_id, "user_email": user_email, "role_name": role_name,
                                      "action": action, "occurred_at": task.assigned_at},
                              correlation_id=correlation_id))
    return task
