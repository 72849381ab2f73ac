"""The payments example's domain app (seed 003): a payment's result and its event commit in one
transaction, through Herald's outbox; the merchant hears of it by signed webhook."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from herald.producers.outbox import DomainEvent, emit

TOPIC = "payment.events"  # as catalog.yaml declares (the default: "<kind>.events")
SCHEMA = "payments.PaymentEvent"


class Base(DeclarativeBase):
    pass


class Payment(Base):
    __tablename__ = "example_payments"

    payment_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(sa.String(64))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(16))
    settled_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


def create_tables(engine: sa.Engine) -> None:
    Base.metadata.create_all(engine, checkfirst=True)


def settle(session: Session, *, payment_id: str, merchant_id: str, webhook_url: str, amount: int,
           currency: str, failure_reason: str | None = None, correlation_id: str | None = None) -> Payment:
    """Record a payment's result and its event, in the caller's transaction."""
    status = "failed" if failure_reason else "succeeded"
    payment = Payment(payment_id=payment_id, merchant_id=merchant_id, amount=amount, currency=currency,
                      status=status, settled_at=datetime.now(UTC))
    session.add(payment)
    emit(session, DomainEvent(topic=TOPIC, key=payment_id, schema_name=SCHEMA, event_type=f"payment.{status}",
                              record={"event_id": str(uuid.uuid4()), "payment_id": payment_id,
                                      "merchant_id": merchant_id, "webhook_url": webhook_url,
                                      "amount": amount, "currency": currency, "status": status,
                                      "failure_reason": failure_reason, "occurred_at": payment.settled_at},
                              correlation_id=correlation_id))
    return payment
