"""The writers of `herald chaos`: an upstream service that keeps writing while PostgreSQL restarts.

A transaction that fails for want of a connection is tried again until it commits. Its
commit may have landed with only the answer lost; the retry finds the registration already
there, or already in that status, and writes nothing: no event is written twice.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from herald.examples.registrations.app import change_status, register, registration_status
from herald.infra.deadline import Deadline

WRITER_THREADS = 4
STEPS = ("created", "payment_uploaded", "payment_verified")
# What a database going away raises: the connection refused, or dropped mid-transaction.
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError)


@dataclass
class WriteReport:
    registrations: int
    retries: int = 0  # transactions tried again because the database was away


def write_durably(database_url: str, run_id: str, count: int, rate: float,
                  give_up_s: float = 120.0) -> WriteReport:
    """Registrations REG-<run_id>-00000.. through payment verified, `rate` per second."""
    engine = sa.create_engine(database_url, pool_size=WRITER_THREADS, pool_pre_ping=True)
    report = WriteReport(count)
    lock = threading.Lock()
    started = time.monotonic()

    def lifecycle(n: int) -> None:
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        for step in STEPS:
            retries = commit_step(engine, f"REG-{run_id}-{n:05d}", n, step, Deadline(give_up_s))
            with lock:
                report.retries += retries

    try:
        with ThreadPoolExecutor(WRITER_THREADS) as pool:
            list(pool.map(lifecycle, range(count)))
    finally:
        engine.dispose()
    return report


def commit_step(engine: sa.Engine, registration_id: str, n: int, step: str, deadline: Deadline) -> int:
    """Commit one lifecycle step, retrying while the database is away; how many retries it took."""
    retries = 0
    while True:
        try:
            with engine.begin() as connection:
                _apply(connection, registration_id, n, step)
            return retries
        except UNAVAILABLE:
            if deadline.expired():
                raise
            retries += 1
            time.sleep(0.25)


def _apply(connection: sa.Connection, registration_id: str, n: int, step: str) -> None:
    status = registration_status(connection, registration_id)
    if status is not None and STEPS.index(status) >= STEPS.index(step):
        return  # committed by an earlier try whose answer was lost with its connection
    if step == "created":
        register(connection, registration_id=registration_id, participant_name=f"Participant {n}",
                 phone=f"+62813{n:0>7}", email=f"chaos{n}@example.test")
    else:
        change_status(connection, registration_id, step)
