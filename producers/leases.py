"""Shard leases for relays: PostgreSQL session advisory locks, rebalanced by member count.

Each relay holds one "member" lock and the locks of the outbox shards it publishes. A
lock lives exactly as long as the relay's database connection, so a relay killed with -9
drops its shards the moment its connection closes, and the others take them at their next
rebalance (every lease interval). While a relay holds a shard no other relay can read it:
one key's events always leave through one relay, in id order.

Locks are per database, so namespaces in separate databases never meet.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass

import sqlalchemy as sa

from herald.producers.outbox import OUTBOX_SHARDS

log = logging.getLogger(__name__)

# The first key of the two-key advisory lock form: Herald's lock spaces.
MEMBER_LOCKS = 0x48455201
SHARD_LOCKS = 0x48455202

_HELD = sa.text(
    "SELECT l.objid::int AS id, l.pid FROM pg_locks l "
    "WHERE l.locktype = 'advisory' AND l.classid = :space AND l.objsubid = 2 AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def fair_share(members: int, shards: int = OUTBOX_SHARDS) -> int:
    """How many shards one of `members` relays may hold: together they always cover all."""
    return math.ceil(shards / max(members, 1))


@dataclass(frozen=True)
class LeaseHolder:
    pid: int  # the relay connection's backend pid
    shards: tuple[int, ...]


def held_locks(conn: sa.Connection, space: int) -> list[tuple[int, int]]:
    """(lock id, backend pid) of every advisory lock held in `space` in this database."""
    return [(row.id, row.pid) for row in conn.execute(_HELD, {"space": space})]


def lease_holders(conn: sa.Connection) -> list[LeaseHolder]:
    """Who holds which shards now, for the health view."""
    by_pid: dict[int, list[int]] = {pid: [] for _member, pid in held_locks(conn, MEMBER_LOCKS)}
    for shard, pid in held_locks(conn, SHARD_LOCKS):
        by_pid.setdefault(pid, []).append(shard)
    return [LeaseHolder(pid, tuple(sorted(shards))) for pid, shards in sorted(by_pid.items())]


class ShardLeases:
    """The shards one relay holds, on the connection it also claims rows with."""

    def __init__(self, conn: sa.Connection, rng: random.Random | None = None) -> None:
        self._conn = conn
        self._rng = rng or random.Random()
        self.owned: set[int] = set()
        self.member_id: int | None = None

    def join(self) -> None:
        """Take a member lock under a random id, so others count this relay."""
        while self.member_id is None:
            candidate = self._rng.randrange(1, 2**31 - 1)
            if self._try_lock(MEMBER_LOCKS, candidate):
                self.member_id = candidate

    def rebalance(self) -> set[int]:
        """Give up shards beyond the fair share, take free ones up to it; returns the owned set."""
        members = len(held_locks(self._conn, MEMBER_LOCKS))
        share = fair_share(members)
        while len(self.owned) > share:
            shard = max(self.owned)
            self._unlock(SHARD_LOCKS, shard)
            self.owned.discard(shard)
        if len(self.owned) < share:
            taken = {shard for shard, _pid in held_locks(self._conn, SHARD_LOCKS)}
            free = [s for s in range(OUTBOX_SHARDS) if s not in taken]
            self._rng.shuffle(free)  # several relays starting at once rarely collide
            for shard in free:
                if len(self.owned) >= share:
                    break
                if self._try_lock(SHARD_LOCKS, shard):
                    self.owned.add(shard)
        self._conn.commit()
        return self.owned

    def release_all(self) -> None:
        self._conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        self._conn.commit()
        self.owned.clear()
        self.member_id = None

    def forget(self) -> None:
        """The connection is gone, and the server released its locks with it."""
        self.owned.clear()
        self.member_id = None

    def _try_lock(self, space: int, lock_id: int) -> bool:
        return bool(self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:space, :id)"),
                                       {"space": space, "id": lock_id}).scalar())

    def _unlock(self, space: int, lock_id: int) -> None:
        self._conn.execute(sa.text("SELECT pg_advisory_unlock(:space, :id)"), {"space": space, "id": lock_id})
