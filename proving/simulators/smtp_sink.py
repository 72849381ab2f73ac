"""An SMTP server (aiosmtpd) that keeps what it accepts: the email-smtp channel's counterpart in
tests, the demo and the bench, so counts come from what a real server received.

Every accepted message is recorded by its Message-ID in a SQLite file that outlives the
process (a killed and restarted sink still counts what it took before). A Message-ID seen
again is a repeat: a mailbox that files by Message-ID shows it once, and `repeats` says how
often Herald sent one again (a connection lost after the server took the message and before
its reply reached Herald). Faults come through `POST /_sim/faults` on the control API: a
reply code (421, 451, 550, ...) for the next N recipients, for every recipient containing a
text, or at a rate, and latency before each reply to DATA.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI
from pydantic import BaseModel, Field

from herald.proving.simulators.store_routes import add_store_routes

log = logging.getLogger(__name__)
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
_NOTIFICATION_HEADER = "X-Herald-Notification-Id"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mails (
    message_id TEXT PRIMARY KEY,
    notification_id TEXT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    parts TEXT NOT NULL,
    receptions INTEGER NOT NULL,
    accepted_at_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS faults (id INTEGER PRIMARY KEY CHECK (id = 1), faults TEXT NOT NULL);
"""


class MailStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def receive(self, message_id: str, notification_id: str | None, recipient: str, subject: str,
                parts: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO mails VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (message_id) "
                "DO UPDATE SET receptions = receptions + 1",
                (message_id, notification_id, recipient, subject, parts, time.time() * 1000))

    def count(self, name: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT (name) DO UPDATE "
                             "SET value = value + 1", (name,))

    def accepted(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM mails").fetchone()[0])

    def save_faults(self, faults: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO faults VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET faults = ?",
                             (faults, faults))

    def saved_faults(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT faults FROM faults").fetchone()
        return str(row[0]) if row else None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            accepted, repeats = self._db.execute(
                "SELECT count(*), coalesce(sum(receptions - 1), 0) FROM mails").fetchone()
            # Two Message-IDs for one notification and recipient: a person reads it twice.
            duplicates = self._db.execute(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM mails "
                "GROUP BY notification_id, recipient HAVING count(*) > 1)").fetchone()[0]
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        refused = {name.removeprefix("refused_"): n for name, n in counters.items()
                   if name.startswith("refused_")}
        return {"kind": "smtp", "accepted": accepted, "repeats": repeats, "duplicates": duplicates,
                "refused": refused, "rejected": sum(refused.values())}

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT message_id, notification_id, recipient, subject, parts, receptions, accepted_at_ms "
                "FROM mails ORDER BY accepted_at_ms").fetchall()
        return [{"message_id": r[0], "notification_id": r[1], "to": r[2], "subject": r[3],
                 "parts": r[4].split(","), "receptions": r[5], "accepted_at_ms": r[6]} for r in rows]


class SinkFaults(BaseModel):
    reply: int = Field(451, ge=400, le=599, description="The code recipients are refused with.")
    fail_next: int = Field(0, ge=0, description="Refuse the next N recipients with `reply`.")
    recipients_containing: str = Field("", description="Refuse every recipient containing this text.")
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Chance any recipient is refused.")
    latency_ms: float = Field(0.0, ge=0.0, description="Wait before answering DATA.")


_REPLY_TEXT = {421: "4.3.2 Service shutting down", 450: "4.2.1 Mailbox busy, try later",
               451: "4.7.1 Greylisted, try again later", 452: "4.3.1 Insufficient storage",
               550: "5.1.1 No such mailbox", 552: "5.2.2 Mailbox full", 554: "5.7.1 Rejected"}


class SinkHandler:
    """aiosmtpd's handler: refuses recipients as the faults say, records every message."""

    def __init__(self, store: MailStore) -> None:
        self.store = store
        saved = store.saved_faults()  # a restarted server keeps its configuration
        self._faults = SinkFaults.model_validate_json(saved) if saved else SinkFaults()

    @property
    def faults(self) -> SinkFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: SinkFaults) -> None:
        self._faults = faults
        self.store.save_faults(faults.model_dump_json())

    def _refuses(self, address: str) -> bool:
        faults = self.faults
        if faults.fail_next > 0:
            self.faults = faults.model_copy(update={"fail_next": faults.fail_next - 1})
            return True
        if faults.recipients_containing and faults.recipients_containing in address:
            return True
        return faults.error_rate > 0 and random.random() < faults.error_rate

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self._refuses(address):
            code = self.faults.reply
            self.store.count(f"refused_{code}")
            return f"{code} {_REPLY_TEXT.get(code, 'Refused by the simulator')}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(
            raw if isinstance(raw, bytes) else raw.encode())
        message_id = message.get("Message-ID")
        if not message_id:
            self.store.count("refused_554")
            return "554 5.6.0 A Message-ID is required here"
        parts = sorted({part.get_content_type() for part in message.walk() if not part.is_multipart()})
        for recipient in envelope.rcpt_tos:
            self.store.receive(str(message_id), message.get(_NOTIFICATION_HEADER), recipient,
                               str(message.get("Subject", "")), ",".join(parts))
        return f"250 2.0.0 OK queued as {message_id}"


async def serve_smtp(handler: SinkHandler, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, hostname="herald-smtp-sink", loop=loop, data_size_limit=10_485_760),
        host, port)


def create_smtp_sink(store_path: Path, smtp_host: str, smtp_port: int) -> FastAPI:
    """The control API (stats, messages, faults); the SMTP server runs in its lifespan."""
    handler = SinkHandler(MailStore(store_path))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server = await serve_smtp(handler, smtp_host, smtp_port)
        log.info("SMTP sink listening on %s:%d", smtp_host, smtp_port)
        yield
        server.close()
        await server.wait_closed()

    app = FastAPI(title="Herald SMTP sink", lifespan=lifespan)

    add_store_routes(app, handler.store)

    @app.post("/_sim/faults")
    async def set_faults(faults: SinkFaults) -> dict[str, Any]:
        handler.faults = faults
        return faults.model_dump()

    return app
