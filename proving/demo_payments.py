"""`herald demo --example payments`: seed 003's payment webhooks end to end, on the payments
example's catalog, counted at the webhook receiver simulator, whose endpoints verify every
signature with Standard Webhooks' reference library.

Five merchants: two steady ones holding the old signing secret; one that rotated to the new
secret (Herald signs with both during the rotation); one that answers 503 for a stretch
(its deliveries are retried, each never before its due time, and delivered once it is back);
one whose endpoint is gone (410: dead-lettered at once, with that reason). Every other
payment's webhook must arrive exactly once.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from herald.examples.payments.app import create_tables, settle
from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.deadline import Deadline, wait_until
from herald.infra.kafka_views import all_entries
from herald.infra.processes import ProcessGroup
from herald.infra.services import Endpoints, start_services, stop_services
from herald.infra.settings import Settings, child_environ
from herald.ops.bootstrap import prepare, replication_factor
from herald.ops.launch import HERALD_ARGV
from herald.proving.demo import wait_for_groups
from herald.proving.simulators.receivers import ReceiverProcess
from herald.schemas import headers as h
from herald.schemas.catalog import (
    consumer_group,
    dead_letter_topic,
    notification_topic,
    qualified,
    retry_topic,
)
from herald.schemas.ids import notification_id

CHANNEL = "merchants"
SECRETS_VARIABLE = "PAYMENT_WEBHOOK_SECRETS"
MERCHANTS = ("steady-1", "steady-2", "rotated", "flaky", "gone")
FLAKY_FAILURES = 25  # the flaky merchant answers this many deliveries 503 before it is back
WRITERS = 4


@dataclass
class PaymentsResult:
    payments: int
    delivered: dict[str, int] = field(default_factory=dict)  # merchant -> webhooks accepted
    lost: int = 0
    duplicates: int = 0  # a webhook-id accepted twice (the receiver drops it, but it is counted)
    bad_signatures: int = 0
    dead_lettered_gone: int = 0  # in the DLQ as EndpointGone after one attempt
    retried: int = 0  # attempts answered 503 by the flaky merchant, then retried
    retries_checked: int = 0  # retry records whose next attempt was held against their due time
    early_retries: int = 0  # attempts made before their due time
    writer_errors: int = 0
    elapsed_s: float = 0.0

    def summary_json(self) -> str:
        return json.dumps({"example": "payments", "payments": self.payments, "delivered": self.delivered,
                           "lost": self.lost, "duplicates": self.duplicates,
                           "bad_signatures": self.bad_signatures,
                           "dead_lettered_gone": self.dead_lettered_gone, "retried": self.retried,
                           "retries_checked": self.retries_checked, "early_retries": self.early_retries,
                           "writer_errors": self.writer_errors})


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def run_payments_demo(settings: Settings, count: int, timeout_s: float,
                      rate: float = 50.0) -> PaymentsResult:
    old, new = new_secret(), new_secret()
    environ = {**os.environ, SECRETS_VARIABLE: f"{new},{old}"}  # current first, then the one going
    settings = dataclasses.replace(settings, catalog=example_catalog_path("payments"))
    _endpoints, started = start_services(settings)
    try:
        endpoints = prepare(settings, open_catalog(settings.catalog, environ))
        return _run(settings, endpoints, count, timeout_s, rate, (old, new))
    finally:
        stop_services(settings, only=started)


def _run(settings: Settings, endpoints: Endpoints, count: int, timeout_s: float, rate: float,
         keys: tuple[str, str]) -> PaymentsResult:
    old, new = keys
    run_id = uuid.uuid4().hex[:8]
    run_dir = settings.home / "logs" / f"payments-{run_id}"
    receiver = ReceiverProcess.plan("webhook", run_dir / "simulators")
    environ = {**child_environ(settings, os.environ, kafka_bootstrap=endpoints.kafka_bootstrap,
                               database_url=endpoints.database_url,
                               replication_factor=replication_factor(settings)),
               SECRETS_VARIABLE: f"{new},{old}"}
    result, started = PaymentsResult(count), time.monotonic()
    engine = sa.create_engine(endpoints.database_url, pool_size=WRITERS + 2)
    try:
        create_tables(engine)
        with ProcessGroup(run_dir, environ) as group:
            receiver.start(group)
            urls = _merchants(receiver, old, new)
            _start_pipeline(group, settings, endpoints.kafka_bootstrap)
            ids = _write(engine, result, run_id, count, rate, urls)
            expected = {m: {nid for nid, merchant in ids.items() if merchant == m} for m in MERCHANTS}
            wanted = count - len(expected["gone"])
            wait_until(lambda: group.check_alive() or receiver.accepted() >= wanted, timeout_s,
                       "every webhook but the gone merchant's")
            time.sleep(2.0)  # let a late repeat arrive before counting
            _count(result, receiver, expected, settings, endpoints.kafka_bootstrap)
    finally:
        engine.dispose()
    result.elapsed_s = time.monotonic() - started
    return result


def _merchants(receiver: ReceiverProcess, old: str, new: str) -> dict[str, str]:
    """Each merchant's endpoint, set up at the receiver; merchant -> URL."""
    behaviours: dict[str, dict[str, Any]] = {
        "steady-1": {"secret": old}, "steady-2": {"secret": old}, "rotated": {"secret": new},
        "flaky": {"secret": old, "fail_next": FLAKY_FAILURES, "status": 503},
        "gone": {"secret": old, "gone": True}}
    return {name: receiver.endpoint(name, **behaviours[name]) for name in MERCHANTS}


def _start_pipeline(group: ProcessGroup, settings: Settings, bootstrap: str) -> None:
    """The stages a catalog with one webhook channel needs."""
    for name, argv in (("relay", ["relay"]), ("streams", ["streams"]),
                       ("streams-status", ["streams", "--processor", "status"]),
                       ("deliver-merchants", ["deliver", "--channel", CHANNEL])):
        group.start(name, [*HERALD_ARGV, *argv])
    groups = [qualified(settings.streams_app_id, settings.namespace),
              consumer_group("deliver", notification_topic(CHANNEL), settings.namespace)]
    wait_for_groups(bootstrap, groups, Deadline(90), group)


def _write(engine: sa.Engine, result: PaymentsResult, run_id: str, count: int, rate: float,
           urls: dict[str, str]) -> dict[str, str]:
    """`count` payments at `rate`, round the merchants, one in four failed; notification id ->
    merchant."""
    begun = time.monotonic()
    planned = {f"PAY-{run_id}-{n:05d}": MERCHANTS[n % len(MERCHANTS)] for n in range(count)}

    def write(n: int, payment: str, merchant: str) -> None:
        time.sleep(max(0.0, begun + n / rate - time.monotonic()))
        try:
            with Session(engine) as session, session.begin():
                settle(session, payment_id=payment, merchant_id=merchant, webhook_url=urls[merchant],
                       amount=10_000 + n, currency="IDR",
                       failure_reason="insufficient_funds" if n % 4 == 3 else None)
        except Exception:
            result.writer_errors += 1
            raise

    with ThreadPoolExecutor(WRITERS) as pool:
        for future in [pool.submit(write, n, p, m) for n, (p, m) in enumerate(planned.items())]:
            future.exception()  # counted in writer_errors; the run goes on
    return {notification_id(payment, "payment_result", CHANNEL): merchant
            for payment, merchant in planned.items()}


def _count(result: PaymentsResult, receiver: ReceiverProcess, expected: dict[str, set[str]],
           settings: Settings, bootstrap: str) -> None:
    deliveries = receiver.messages()
    accepted = Counter(d["webhook_id"] for d in deliveries)
    result.duplicates = sum(d["receptions"] - 1 for d in deliveries)
    result.delivered = {m: len(expected[m] & set(accepted)) for m in MERCHANTS if m != "gone"}
    result.lost = sum(len(expected[m] - set(accepted)) for m in MERCHANTS if m != "gone")
    attempts = receiver.attempts()
    result.bad_signatures = sum(1 for a in attempts if a["status"] == 401)
    dlq = qualified(dead_letter_topic(notification_topic(CHANNEL)), settings.namespace)
    gone = {e.key.decode() for e in all_entries(bootstrap, dlq)
            if e.headers.get(h.ERROR_CLASS) == "EndpointGone" and e.headers.get(h.ATTEMPTS) == "1"}
    result.dead_lettered_gone = len(gone & expected["gone"])
    result.retried = sum(1 for a in attempts if a["status"] == 503)
    result.retries_checked, result.early_retries = _early_retries(attempts, bootstrap, settings.namespace)


def _early_retries(attempts: list[dict[str, Any]], bootstrap: str, namespace: str) -> tuple[int, int]:
    """Attempts made before their due time: the retry records (in the tier topics, with the
    attempt they follow and its due time) against the receiver's attempts, in order. Returns
    (retries checked, early ones)."""
    by_id: dict[str, list[float]] = {}
    for attempt in attempts:
        by_id.setdefault(attempt["webhook_id"], []).append(attempt["at_ms"])
    checked = early = 0
    for tier in (1, 2, 3):
        topic = qualified(retry_topic(notification_topic(CHANNEL), tier), namespace)
        for entry in all_entries(bootstrap, topic):
            made = by_id.get(entry.key.decode(), [])
            after = int(entry.headers.get(h.ATTEMPT, "0"))  # the attempt this retry follows
            due = h.parse_iso(entry.headers.get(h.DUE_AT))
            if due is not None and len(made) > after:
                checked += 1
                early += made[after] < due.timestamp() * 1000
    return checked, early


def print_payments_report(result: PaymentsResult) -> None:
    table = Table("measure", "value", title="Herald demo, payments example: counted at the webhook receivers")
    table.add_row("payments settled (outbox)", str(result.payments))
    table.add_row("writer errors", str(result.writer_errors))
    for merchant, delivered in result.delivered.items():
        table.add_row(f"webhooks accepted, {merchant}", str(delivered))
    table.add_row("answered 503 by the flaky merchant, retried", str(result.retried))
    table.add_row("retries made before their due time", f"{result.early_retries} of {result.retries_checked}")
    table.add_row("gone merchant (410): dead-lettered at once", str(result.dead_lettered_gone))
    table.add_row("signatures the receivers refused", str(result.bad_signatures))
    table.add_row("lost", str(result.lost))
    table.add_row("duplicates", str(result.duplicates))
    table.add_row("wall time", f"{result.elapsed_s:.1f} s")
    Console().print(table)
    print(result.summary_json(), flush=True)
