"""Which gateway instance holds each WhatsApp session: the compacted `sessions.events`, in memory.

Every delivery worker of the whatsapp channel reads the whole topic at start and then
follows it, so choosing where to send issues no database query. A correction the worker
made itself (a session found on another instance) applies at once, before the database's
own event comes back through the outbox.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

from herald.schemas.codec import UndecodableRecord, decode_expecting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownSession:
    session_id: str
    workspace_id: str
    status: str
    instance: str | None
    event: dict[str, Any]  # the latest SessionEvent, the base of a correction


class SessionDirectory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, KnownSession] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of sessions.events; a tombstone forgets the session."""
        if value is None:
            if key is not None:
                with self._lock:
                    self._sessions.pop(key.decode(), None)
            return
        try:
            event = decode_expecting(value, "herald.SessionEvent")
        except UndecodableRecord as exc:
            log.error("ignoring an undecodable sessions.events record (key %r): %s", key, exc)
            return
        session = KnownSession(event["session_id"], event["workspace_id"], event["status"],
                               event["gateway_instance"], event)
        with self._lock:
            self._sessions[session.session_id] = session

    def sender_for(self, workspace_id: str) -> KnownSession | None:
        """The workspace's session to send from: a connected one first, lowest id first."""
        with self._lock:
            candidates = [s for s in self._sessions.values() if s.workspace_id == workspace_id]
        candidates.sort(key=lambda s: (s.status != "connected", s.session_id))
        return candidates[0] if candidates else None

    def get(self, session_id: str) -> KnownSession | None:
        with self._lock:
            return self._sessions.get(session_id)

    def moved(self, session_id: str, instance: str) -> None:
        with self._lock:
            known = self._sessions.get(session_id)
            if known is not None:
                self._sessions[session_id] = replace(known, instance=instance, status="connected")

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
