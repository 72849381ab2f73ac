"""What the simulated providers accepted, in one SQLite file that outlives any instance.

Several gateway instances of one network share a store, like a real provider's backend:
the Idempotency-Key is honoured across instances, a crashed instance's acceptances stay
counted, and `duplicates` counts what a person would have received twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# How long a statement (and the WAL switch at open) waits on another instance's lock.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    answer TEXT NOT NULL,
    instance TEXT NOT NULL,
    session_id TEXT,
    recipient TEXT NOT NULL,
    template TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    accepted_at_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _use_wal(db: sqlite3.Connection, give_up_at: float) -> None:
    """Switch a new file to WAL. Instances starting together race to do it, and SQLite answers
    the loser "database is locked" at once, without its busy wait (the two would deadlock
    otherwise): a gateway instance of `herald chaos` died of it at start. So try again."""
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= give_up_at:
                raise
            time.sleep(0.01)


@dataclass(frozen=True)
class Accepted:
    status_code: int  # 201 new, 200 the same key and body again, 409 the same key, another body
    answer: dict[str, Any]


class MessageStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per process, serialised: the simulator's handlers are async, and a
        # statement takes microseconds. WAL lets several instance processes share the file.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_S)
        _use_wal(self._db, time.monotonic() + BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA synchronous=NORMAL")  # safe against a killed process
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def accept(self, key: str, fingerprint: str, message: dict[str, Any], instance: str) -> Accepted:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT fingerprint, answer FROM messages WHERE idempotency_key = ?",
                                       (key,)).fetchone()
                if row is not None:
                    result = self._repeat(row, fingerprint)
                else:
                    answer = {"message_id": str(uuid.uuid4()), "status": "accepted"}
                    self._db.execute(
                        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, fingerprint, json.dumps(answer), instance, message.get("session_id"),
                         message["to"], message["template"], message["subject_id"],
                         message["notification_id"], time.time() * 1000))
                    self._count("accepted")  # O(1) to read, for callers polling progress
                    result = Accepted(201, answer)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return result

    def _repeat(self, row: tuple[str, str], fingerprint: str) -> Accepted:
        if row[0] != fingerprint:
            return Accepted(409, {"error": "Idempotency-Key reused with another body"})
        self._count("replays")
        return Accepted(200, json.loads(row[1]))

    def count(self, name: str) -> None:
        with self._lock:
            self._count(name)

    def _count(self, name: str) -> None:
        self._db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT (name) DO UPDATE "
                         "SET value = value + 1", (name,))

    def accepted(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'accepted'").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            accepted = self._db.execute("SELECT count(*) FROM messages").fetchone()[0]
            duplicates = self._db.execute(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM messages "
                "GROUP BY subject_id, template, recipient HAVING count(*) > 1)").fetchone()[0]
            by_instance = dict(self._db.execute(
                "SELECT instance, count(*) FROM messages GROUP BY instance").fetchall())
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return {"accepted": accepted, "duplicates": duplicates, "by_instance": by_instance,
                "replays": counters.get("replays", 0), "rejected": counters.get("rejected", 0)}

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(
                "SELECT idempotency_key, instance, session_id, recipient, template, subject_id, "
                "notification_id, accepted_at_ms, answer FROM messages ORDER BY accepted_at_ms")
            rows = cursor.fetchall()
        return [{"idempotency_key": r[0], "instance": r[1], "session_id": r[2], "to": r[3],
                 "template": r[4], "subject_id": r[5], "notification_id": r[6],
                 "accepted_at_ms": r[7], "message_id": json.loads(r[8])["message_id"]} for r in rows]
