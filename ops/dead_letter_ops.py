"""What ops do with the DLQ index: list and filter, show, replay and discard, with an audit log.

Replay writes each record back into the outbox, in the same transaction that marks its row
replayed and adds it to the audit entry. The relay then publishes it like any event (its
order per key kept). So a replay is safe to interrupt and re-run: a batch is either wholly
replayed and marked, or not at all, and a marked row is never replayed again. Rows are
locked while a batch takes them, so two replays at once take each row once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.producers.outbox import emit_encoded
from herald.schemas import headers as h
from herald.schemas.catalog import channel_of_topic, notification_topic, retry_topic
from herald.schemas.tables import DEAD_LETTER_STATES, DeadLetter, DeadLetterAction

REPLAY_TARGETS = ("original", "retry")
# Headers a failure added: a replay starts the record afresh (attempts, due time, error).
FAILURE_HEADERS = (h.ERROR_CLASS, h.ERROR_MESSAGE, h.CONSUMER_GROUP, h.ATTEMPTS, h.ATTEMPT, h.DUE_AT,
                   h.FIRST_FAILED_AT, h.RETRY_DELAY_MS, h.TRACE_ID)
ORIGIN_HEADERS = (h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET, h.ORIGINAL_TIMESTAMP)


class DeadLetterOpsError(ValueError):
    """A request ops cannot carry out as asked (an unknown state, target or topic); says why."""


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters: every criterion given must hold. `state` None means any state."""

    ids: tuple[int, ...] = ()
    topic: str | None = None  # the original topic (catalog name), or a channel's name
    error_class: str | None = None
    key: str | None = None
    text: str | None = None  # in the key, the error, the headers or the decoded payload
    since: datetime | None = None  # failed at or after
    state: str | None = "open"
    # (path in the decoded payload, value): e.g. ("params.user_id", "42"), a catalog's parameter.
    fields: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in DEAD_LETTER_STATES:
            raise DeadLetterOpsError(
                f"unknown state {self.state!r}; known: {', '.join(DEAD_LETTER_STATES)}")
        for name in ("topic", "error_class", "key", "text"):
            value = getattr(self, name)
            if value is not None and not _storable(value):
                raise DeadLetterOpsError(f"{name} has characters no text column can hold (NUL, or a "
                                         "lone surrogate); nothing can match it")
        for path, value in self.fields:
            if not _FIELD_PATH.match(path):
                raise DeadLetterOpsError("a field is a dotted path of names in the payload, e.g. "
                                         "params.user_id (at most 4 levels)")
            if not _storable(value):
                raise DeadLetterOpsError(f"the value for {path} has characters no text column can hold")
        if any(not 1 <= i < 2**63 for i in self.ids):
            raise DeadLetterOpsError("dead letter ids are from 1 to 2^63 - 1")
        if self.since is not None:  # any offset Python takes; PostgreSQL takes fewer
            object.__setattr__(self, "since", self.since.astimezone(UTC))

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if self.ids:
            found.append(DeadLetter.id.in_(self.ids))
        if self.topic:
            found.append(DeadLetter.original_topic == topic_of(self.topic))
        if self.error_class:
            found.append(DeadLetter.error_class == self.error_class)
        if self.key:
            found.append(DeadLetter.key_text == self.key)
        if self.text:
            pattern = f"%{_escape_like(self.text)}%"
            found.append(sa.or_(DeadLetter.key_text.ilike(pattern), DeadLetter.error_message.ilike(pattern),
                                sa.cast(DeadLetter.headers, sa.Text).ilike(pattern),
                                sa.cast(DeadLetter.payload_json, sa.Text).ilike(pattern)))
        if self.since:
            found.append(DeadLetter.last_failed_at >= self.since)
        for path, value in self.fields:
            found.append(sa.func.jsonb_extract_path_text(DeadLetter.payload_json, *path.split(".")) == value)
        if self.state:
            found.append(DeadLetter.state == self.state)
        return found

    def as_dict(self) -> dict[str, Any]:
        """The filter as the audit log records it (only what was given)."""
        given = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        if self.since:
            given["since"] = h.iso(self.since)
        if self.ids:
            given["ids"] = list(self.ids)
        if self.fields:
            given["fields"] = dict(self.fields)
        return given


_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3}$")


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def topic_of(name: str) -> str:
    """A channel's name (no dot in it) stands for its notification topic; anything else is a
    topic name."""
    return notification_topic(name) if "." not in name else name


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Page:
    rows: list[DeadLetter]
    total: int  # matching rows in all pages


def list_dead_letters(session: Session, selection: DeadLetterFilter, *, limit: int = 50,
                      offset: int = 0) -> Page:
    """Newest first, a page at a time."""
    conditions = selection.conditions()
    total = session.scalar(sa.select(sa.func.count()).select_from(DeadLetter).where(*conditions))
    rows = session.scalars(sa.select(DeadLetter).where(*conditions).order_by(DeadLetter.id.desc())
                           .limit(limit).offset(offset)).all()
    return Page(list(rows), int(total or 0))


def open_counts_by_topic(session: Session) -> dict[str, int]:
    """Open dead letters per original topic: the health widget's "failed jobs"."""
    rows = session.execute(sa.select(DeadLetter.original_topic, sa.func.count())
                           .where(DeadLetter.state == "open").group_by(DeadLetter.original_topic))
    return {topic: int(count) for topic, count in rows}


def replay_topic(original_topic: str, target: str) -> str:
    """Where a replay goes: the topic it first failed on, or that topic's first retry tier."""
    check_target(target)
    if target == "original":
        return original_topic
    channel = channel_of_topic(original_topic)
    if channel is None or original_topic != notification_topic(channel):
        raise DeadLetterOpsError(f"{original_topic} has no retry tiers; replay it to the original topic")
    return retry_topic(original_topic, 1)


def check_target(target: str) -> None:
    if target not in REPLAY_TARGETS:
        raise DeadLetterOpsError(f"unknown replay target {target!r}; known: {', '.join(REPLAY_TARGETS)}")


def replay_headers(headers: Mapping[str, str], target: str, now: datetime) -> dict[str, str]:
    """The record's own headers, without what its failure added, replay count + 1. On a retry
    tier it is due at once, and still names where it first arrived, so a new dead letter
    goes to the same DLQ."""
    replayed = {k: v for k, v in headers.items() if k not in FAILURE_HEADERS}
    count = headers.get(h.REPLAY_COUNT, "0")
    replayed[h.REPLAY_COUNT] = str((int(count) if count.isdigit() else 0) + 1)
    if target == "retry":
        replayed[h.DUE_AT] = h.iso(now)
    else:
        for name in ORIGIN_HEADERS:
            replayed.pop(name, None)
    return replayed


def unreplayable_reason(row: DeadLetter) -> str | None:
    """Why a record cannot go back as it came, or None."""
    if row.message_key is None:
        return "no key: the relay publishes by key, and a keyless record fails the same way again"
    if row.payload is None:
        return "no value"
    try:
        row.message_key.decode("utf-8")
    except UnicodeDecodeError:
        return "key is not UTF-8"
    return None


@dataclass
class ActionResult:
    action: str
    matched: int  # open rows the selection matched when it started
    done: int = 0  # replayed or discarded
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows left open
    action_id: int | None = None  # the audit entry; None for a dry run
    dry_run: bool = False
    target_topics: dict[str, int] = field(default_factory=dict)  # replay: topic -> rows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


BatchHook = Callable[["ActionResult"], None]  # called after each committed batch


def replay(engine: sa.Engine, selection: DeadLetterFilter, *, actor: str, target: str = "original",
           dry_run: bool = False, batch_size: int = 200, limit: int | None = None,
           after_batch: BatchHook | None = None) -> ActionResult:
    """Replay the open dead letters `selection` matches, oldest first, at most `limit` of them,
    in batches (see the module's doc)."""
    return _act(engine, "replay", selection, actor, target, dry_run, batch_size, after_batch, limit)


def discard(engine: sa.Engine, selection: DeadLetterFilter, *, actor: str, dry_run: bool = False,
            batch_size: int = 500) -> ActionResult:
    """Mark the open dead letters `selection` matches as discarded, producing nothing."""
    return _act(engine, "discard", selection, actor, None, dry_run, batch_size, None)


def _act(engine: sa.Engine, action: str, selection: DeadLetterFilter, actor: str, target: str | None,
         dry_run: bool, batch_size: int, after_batch: BatchHook | None,
         limit: int | None = None) -> ActionResult:
    if selection.state not in ("open", None):
        raise DeadLetterOpsError(f"only open dead letters can be {action}ed; the filter asks for "
                                 f"{selection.state}")
    if target is not None:
        check_target(target)  # before any work
    if limit is not None and limit < 1:
        raise DeadLetterOpsError("a limit is at least 1")
    run = _ActionRun(engine, DeadLetterFilter(**{**asdict(selection), "state": "open"}), actor, target, limit)
    if dry_run:
        return run.preview(action)
    if not run.start(action, selection):
        return run.result
    last_id = 0
    while run.wants_more() and (last_id := run.take_batch(last_id, batch_size)):
        if after_batch:
            after_batch(run.result)
    run.finish()
    return run.result


class _ActionRun:
    """One replay or discard: its audit entry, its counts, and the batches it takes."""

    def __init__(self, engine: sa.Engine, selection: DeadLetterFilter, actor: str,
                 target: str | None, limit: int | None = None) -> None:
        self._engine = engine
        self._selection = selection  # open rows only
        self._actor = actor
        self._target = target
        self._limit = limit  # rows to act on at most, oldest first; None: every one
        self.result = ActionResult("", 0)

    def _matching_open(self, session: Session) -> int:
        count = int(session.scalar(sa.select(sa.func.count()).select_from(DeadLetter)
                                   .where(*self._selection.conditions())) or 0)
        return count if self._limit is None else min(count, self._limit)

    def wants_more(self) -> bool:
        return self._limit is None or self.result.done < self._limit

    def _count_not_open(self, session: Session) -> None:
        """Ids asked for by name that are not open, each with why: replayed or discarded already
        (by whom), or unknown."""
        ids = set(self._selection.ids)
        if not ids:
            return
        not_open = ids - set(session.scalars(sa.select(DeadLetter.id).where(*self._selection.conditions())))
        rows = session.scalars(sa.select(DeadLetter).where(DeadLetter.id.in_(not_open)))
        found = {row.id: row for row in rows}
        for dead_letter_id in sorted(not_open):
            row = found.get(dead_letter_id)
            reason = (f"already {row.state} (by {row.resolved_by}, audit entry {row.resolved_action_id})"
                      if row is not None else "no such dead letter")
            self.result.skipped[reason] = self.result.skipped.get(reason, 0) + 1

    def preview(self, action: str) -> ActionResult:
        with Session(self._engine) as session:
            rows = session.scalars(sa.select(DeadLetter).where(*self._selection.conditions())
                                   .order_by(DeadLetter.id).limit(self._limit)).all()
            self.result = ActionResult(action, len(rows), dry_run=True)
            self._count_not_open(session)
        for row in rows:
            self._admit(row)
        return self.result

    def start(self, action: str, asked: DeadLetterFilter) -> bool:
        """The audit entry, unless nothing open matches (then the result says why; no entry)."""
        with Session(self._engine) as session, session.begin():
            self.result = ActionResult(action, self._matching_open(session))
            self._count_not_open(session)
            if not self.result.matched:
                return False
            entry = DeadLetterAction(action=action, actor=self._actor, target=self._target,
                                     selection=asked.as_dict())
            session.add(entry)
            session.flush()
            self.result.action_id = entry.id
            return True

    def take_batch(self, after_id: int, batch_size: int) -> int:
        """One transaction: lock the next open rows, act on them, mark them, audit them.
        Returns the last id looked at (0 when none were left)."""
        now = datetime.now(UTC)
        with Session(self._engine) as session, session.begin():
            wanted = batch_size if self._limit is None else min(batch_size, self._limit - self.result.done)
            rows = session.scalars(
                sa.select(DeadLetter).where(*self._selection.conditions(), DeadLetter.id > after_id)
                .order_by(DeadLetter.id).limit(wanted).with_for_update()).all()
            taken = [row for row in rows if self._admit(row)]
            for row in taken:
                self._resolve(session, row, now)
            if taken:
                ids = [row.id for row in taken]
                session.execute(sa.update(DeadLetterAction)
                                .where(DeadLetterAction.id == self.result.action_id)
                                .values(row_count=DeadLetterAction.row_count + len(ids),
                                        row_ids=DeadLetterAction.row_ids.concat(ids)))
            return rows[-1].id if rows else 0

    def _resolve(self, session: Session, row: DeadLetter, now: datetime) -> None:
        if self._target is not None:
            _replay_into_outbox(session, row, self._target, now)
            row.state, row.replayed_to = "replayed", replay_topic(row.original_topic, self._target)
        else:
            row.state = "discarded"
        row.resolved_at, row.resolved_by, row.resolved_action_id = now, self._actor, self.result.action_id

    def _admit(self, row: DeadLetter) -> bool:
        """Whether the row can be acted on; counts it as done, or skipped with its reason."""
        reason = None
        if self._target is not None:
            reason = unreplayable_reason(row)
            if reason is None:
                try:
                    topic = replay_topic(row.original_topic, self._target)
                except DeadLetterOpsError as exc:
                    reason = str(exc)
                else:
                    self.result.target_topics[topic] = self.result.target_topics.get(topic, 0) + 1
        if reason is not None:
            self.result.skipped[reason] = self.result.skipped.get(reason, 0) + 1
            return False
        self.result.done += 1
        return True

    def finish(self) -> None:
        with Session(self._engine) as session, session.begin():
            session.execute(sa.update(DeadLetterAction).where(DeadLetterAction.id == self.result.action_id)
                            .values(finished_at=sa.func.clock_timestamp()))


def _replay_into_outbox(session: Session, row: DeadLetter, target: str, now: datetime) -> None:
    assert row.message_key is not None and row.payload is not None  # checked by unreplayable_reason
    emit_encoded(session, replay_topic(row.original_topic, target), row.message_key.decode("utf-8"),
                 row.payload, replay_headers(row.headers, target, now))
