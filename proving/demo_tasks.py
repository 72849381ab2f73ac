"""`herald demo --example tasks`: seed 001's task tracker end to end, on the tasks example's
catalog, its email sent over SMTP and counted at the SMTP server (the sink) by Message-ID.

What seed 001 did by hand is done here by Herald's own tools: the writers assign tasks through
the outbox while the broker is stopped for a while (no writer fails, nothing is parked in a
`failed_notifications` table), the SMTP server refuses a few recipients with 550 (they are
dead-lettered at once, the reply in the dead letter) and is killed and restarted mid-stream,
and the operator lists the failed ones by state and by the assignee's `user_id`, then replays
one by id and the rest at once with `--since` and `--limit`, as seed 001's
`retry_failed_notifications --max-age --limit` did. Every assignment's email must arrive
exactly once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from herald.examples.tasks.app import assign, create_tables
from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.deadline import Deadline, wait_until
from herald.infra.processes import ProcessGroup
from herald.infra.services import Endpoints, embedded_kafka, start_services, stop_services
from herald.infra.settings import Settings, child_environ
from herald.ops.bootstrap import prepare, replication_factor
from herald.ops.launch import HERALD_ARGV
from herald.proving.demo import wait_for_groups
from herald.proving.simulators.receivers import ReceiverProcess
from herald.schemas.catalog import consumer_group, notification_topic, qualified
from herald.schemas.ids import notification_id
from herald.schemas.tables import DeadLetter

USERS = 7  # assignees: user_id U0 .. U6
REJECTED = 5  # the SMTP server refuses these many recipients with 550: dead-lettered at once
WRITERS = 4


@dataclass
class TasksResult:
    tasks: int
    delivered: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicates: int = 0
    writer_errors: int = 0
    kafka_outage_s: float = 0.0  # 0: the broker is configured, not embedded, so not stopped
    smtp_outage_s: float = 0.0  # the SMTP server was killed (SIGKILL) this long mid-stream
    # A Message-ID the server took again (its 250 lost with the killed server): a mailbox
    # files it once, so it is no duplicate, but it is counted.
    repeats: int = 0
    written_during_outage: int = 0
    dead_lettered: int = 0
    # error class -> open dead letters: ProviderRejected, the 550s; RetriesExhausted, those whose
    # attempts all fell in the SMTP outage (its restart takes seconds more on a slow machine)
    dead_lettered_by_class: dict[str, int] = field(default_factory=dict)
    listed_for_user: dict[str, int] = field(default_factory=dict)  # user_id -> open dead letters
    replayed: dict[str, int] = field(default_factory=dict)  # "one" by id, "rest" with --since/--limit
    elapsed_s: float = 0.0

    def summary_json(self) -> str:
        return json.dumps({"example": "tasks", "tasks": self.tasks, "delivered": self.delivered,
                           "lost": self.lost, "duplicates": self.duplicates,
                           "writer_errors": self.writer_errors, "kafka_outage_s": self.kafka_outage_s,
                           "smtp_outage_s": self.smtp_outage_s, "repeats": self.repeats,
                           "written_during_outage": self.written_during_outage,
                           "dead_lettered": self.dead_lettered, "replayed": self.replayed,
                           "dead_lettered_by_class": self.dead_lettered_by_class})


def run_tasks_demo(settings: Settings, count: int, timeout_s: float, outage_s: float = 15.0,
                   rate: float = 20.0, smtp_outage_s: float = 3.0) -> TasksResult:
    settings = dataclasses.replace(settings, catalog=example_catalog_path("tasks"))
    _endpoints, started = start_services(settings)
    try:
        endpoints = prepare(settings, open_catalog(settings.catalog, os.environ))
        embedded = settings.kafka_bootstrap is None  # a configured broker is not ours to stop
        return _run(settings, endpoints, count, timeout_s, outage_s if embedded else 0.0, rate, smtp_outage_s)
    finally:
        stop_services(settings, only=started)


def _run(settings: Settings, endpoints: Endpoints, count: int, timeout_s: float, outage_s: float,
         rate: float, smtp_outage_s: float = 0.0) -> TasksResult:
    run_id = uuid.uuid4().hex[:8]
    run_dir = settings.home / "logs" / f"tasks-{run_id}"
    sink = ReceiverProcess.plan("smtp", run_dir / "simulators")
    environ = {**child_environ(settings, os.environ, kafka_bootstrap=endpoints.kafka_bootstrap,
                               database_url=endpoints.database_url,
                               replication_factor=replication_factor(settings)),
               **sink.environ()}
    result, started, started_at = TasksResult(count), time.monotonic(), datetime.now(UTC)
    engine = sa.create_engine(endpoints.database_url, pool_size=WRITERS + 2)
    try:
        create_tables(engine)
        with ProcessGroup(run_dir, environ) as group:
            sink.start(group)
            _start_pipeline(group, settings, endpoints.kafka_bootstrap)
            sink.faults(reply=550, fail_next=REJECTED)
            outage = _smtp_outage(group, sink, result, after_s=count / rate * 2 / 3, outage_s=smtp_outage_s)
            ids = _write_through_an_outage(engine, settings, result, run_id, count, rate, outage_s)
            outage.join()
            deadline = Deadline(timeout_s)
            _wait(lambda: _delivered(sink, ids) >= count - REJECTED, deadline, group,
                  "all but the rejected")
            _wait(lambda: _open_dead_letters(engine, started_at) >= REJECTED, deadline, group,
                  "the rejected, indexed")
            _operate(environ, engine, result, started_at)
            _wait(lambda: _delivered(sink, ids) >= count, deadline, group, "every notification")
            time.sleep(2.0)  # let a late repeat arrive before counting duplicates
            _count(result, sink, ids)
    finally:
        engine.dispose()
    result.elapsed_s = time.monotonic() - started
    return result


def _smtp_outage(group: ProcessGroup, sink: ReceiverProcess, result: TasksResult, after_s: float,
                 outage_s: float) -> threading.Thread:
    """After `after_s`, the SMTP server killed with SIGKILL mid-stream, restarted `outage_s` later
    on the same store; what it took before is still counted."""
    def outage() -> None:
        if outage_s <= 0:
            return
        time.sleep(after_s)
        group.kill(sink.name)
        time.sleep(outage_s)
        sink.start(group)
        result.smtp_outage_s = outage_s

    thread = threading.Thread(target=outage, name="smtp outage")
    thread.start()
    return thread


def _start_pipeline(group: ProcessGroup, settings: Settings, bootstrap: str) -> None:
    """The stages a catalog with one email channel needs (no gateway: no sessions stages)."""
    for name, argv in (("relay", ["relay"]), ("streams", ["streams"]),
                       ("streams-missing", ["streams", "--processor", "missing"]),
                       ("streams-status", ["streams", "--processor", "status"]),
                       ("dlq-index", ["dlq", "index"]), ("deliver-email", ["deliver", "--channel", "email"])):
        group.start(name, [*HERALD_ARGV, *argv])
    groups = [qualified(settings.streams_app_id, settings.namespace),
              consumer_group("deliver", notification_topic("email"), settings.namespace)]
    wait_for_groups(bootstrap, groups, Deadline(90), group)


def _write_through_an_outage(engine: sa.Engine, settings: Settings, result: TasksResult, run_id: str,
                             count: int, rate: float, outage_s: float) -> list[str]:
    """Assign `count` tasks at `rate`; a third of the way in, the broker stops for `outage_s`."""
    ids = [f"T-{run_id}-{n:05d}" for n in range(count)]
    outage = threading.Event()
    lock = threading.Lock()
    begun = time.monotonic()

    def write(n: int) -> None:
        time.sleep(max(0.0, begun + n / rate - time.monotonic()))
        try:
            with Session(engine) as session, session.begin():
                assign(session, task_id=ids[n], title=f"Review ticket {n}", user_id=f"U{n % USERS}",
                       user_email=f"user{n % USERS}@example.test", role_name="reviewer")
        except Exception:
            with lock:
                result.writer_errors += 1
            raise
        if outage.is_set():
            with lock:
                result.written_during_outage += 1

    with ThreadPoolExecutor(WRITERS) as pool:
        written = [pool.submit(write, n) for n in range(count)]
        if outage_s:
            time.sleep(count / rate / 3)
            kafka = embedded_kafka(settings)
            kafka.stop()
            outage.set()
            time.sleep(outage_s)
            outage.clear()
            kafka.start()
            result.kafka_outage_s = outage_s
        for future in written:
            future.exception()  # counted in writer_errors; the run goes on
    return ids


def _operate(environ: dict[str, str], engine: sa.Engine, result: TasksResult, started_at: datetime) -> None:
    """What seed 001's operators did by hand, with Herald's commands: list the failed ones by
    state and by user, replay one by id, then the rest with --since and --limit."""
    since = started_at.isoformat()  # this run's: the index keeps earlier runs' dead letters too
    failed = _herald_json_lines(environ, "dlq", "list", "--state", "open", "--since", since, "--json")
    result.dead_lettered = len(failed)
    result.dead_lettered_by_class = dict(Counter(str(row["error_class"]) for row in failed))
    with Session(engine) as session:
        users = sorted(set(session.scalars(sa.select(DeadLetter.payload_json["params"]["user_id"].astext)
                                           .where(*_this_run(started_at), DeadLetter.state == "open"))))
    for user in users:
        listed = _herald_json_lines(environ, "dlq", "list", "--since", since,
                                    "--field", f"params.user_id={user}", "--json")
        result.listed_for_user[user] = len(listed)
    first = min(row["id"] for row in failed)
    _herald(environ, "dlq", "replay", str(first), "--actor", "demo")
    result.replayed["one"] = 1
    _herald(environ, "dlq", "replay", "--all", "--since", since, "--limit", "1000", "--actor", "demo")
    with Session(engine) as session:
        result.replayed["rest"] = int(session.scalar(sa.select(sa.func.count()).select_from(DeadLetter).where(
            *_this_run(started_at), DeadLetter.state == "replayed", DeadLetter.id != first)) or 0)


def _this_run(started_at: datetime) -> list[sa.ColumnElement[bool]]:
    return [DeadLetter.last_failed_at >= started_at]


def _herald(environ: dict[str, str], *args: str) -> str:
    done = subprocess.run([*HERALD_ARGV, *args], env=environ, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"herald {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _herald_json_lines(environ: dict[str, str], *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _herald(environ, *args).splitlines() if line.startswith("{")]


def _open_dead_letters(engine: sa.Engine, started_at: datetime) -> int:
    with Session(engine) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(DeadLetter)
                                  .where(*_this_run(started_at), DeadLetter.state == "open")) or 0)


def _expected(ids: list[str]) -> dict[str, str]:
    """notification id -> task id: the email each assignment calls for."""
    return {notification_id(task, "task_assigned", "email"): task for task in ids}


def _delivered(sink: ReceiverProcess, ids: list[str]) -> int:
    wanted = _expected(ids)
    return len({m["notification_id"] for m in sink.messages() if m["notification_id"] in wanted})


def _count(result: TasksResult, sink: ReceiverProcess, ids: list[str]) -> None:
    """At the server: one mail per Message-ID; a notification under two Message-IDs, or twice
    to one recipient, is a duplicate a person would read."""
    wanted = _expected(ids)
    mails = [m for m in sink.messages() if m["notification_id"] in wanted]
    per_notification = Counter(m["notification_id"] for m in mails)
    result.delivered = {"email": len(per_notification)}
    result.lost = len(wanted) - len(per_notification)
    result.duplicates = sum(n - 1 for n in per_notification.values())
    result.repeats = sum(m["receptions"] - 1 for m in mails)


def print_tasks_report(result: TasksResult) -> None:
    table = Table("measure", "value", title="Herald demo, tasks example: counted at the SMTP server")
    table.add_row("tasks assigned (outbox)", str(result.tasks))
    table.add_row("writer errors", str(result.writer_errors))
    outage = f"{result.kafka_outage_s:g} s" if result.kafka_outage_s else "none (a configured broker)"
    table.add_row("broker stopped for", outage)
    table.add_row("assignments committed while it was down", str(result.written_during_outage))
    table.add_row("SMTP server killed mid-stream for", f"{result.smtp_outage_s:g} s")
    by_class = result.dead_lettered_by_class
    table.add_row("refused by the SMTP server (550), dead-lettered", str(by_class.get("ProviderRejected", 0)))
    table.add_row("retries exhausted while the SMTP server was down, dead-lettered",
                  str(by_class.get("RetriesExhausted", 0)))
    table.add_row("failed ones listed per user_id",
                  ", ".join(f"{user}: {n}" for user, n in result.listed_for_user.items()) or "-")
    table.add_row("replayed: one by id, the rest with --since/--limit",
                  f"{result.replayed.get('one', 0)}, {result.replayed.get('rest', 0)}")
    for channel, delivered in result.delivered.items():
        table.add_row(f"notifications delivered, {channel}", f"{delivered} / {result.tasks}")
    table.add_row("lost", str(result.lost))
    table.add_row("duplicates", str(result.duplicates))
    table.add_row("sent again under the same Message-ID (filed once)", str(result.repeats))
    table.add_row("wall time", f"{result.elapsed_s:.1f} s")
    Console().print(table)
    print(result.summary_json(), flush=True)


def _wait(done: Any, deadline: Deadline, group: ProcessGroup, what: str) -> None:
    wait_until(lambda: group.check_alive() or done(), deadline.remaining(), what)
