"""Records a worker has taken, per partition in offset order, until a transaction commits them.

Many records are in flight at once, and they finish in any order. A transaction may take
only the finished prefix of each partition: their outcome records, and as offset the one
after the last of them. A record that finished behind an unfinished one waits, so a crash
never commits past work that was not done, and an outcome is produced exactly in the
transaction that commits its input's offset.

Thread-safe: handlers finish entries on the event loop, while the Kafka thread takes
finished work and, on a rebalance or a failed transaction, drops partitions.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from herald.infra.checkpoint import Partition, Taken
from herald.schemas.records import OutgoingRecord


@dataclass(eq=False)
class Entry:
    partition: Partition
    offset: int
    records: list[OutgoingRecord] | None = None  # None while in flight
    dropped: bool = False  # its partition was revoked or rewound: its outcome is void


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[Partition, deque[Entry]] = {}
        self._unfinished = 0

    def start(self, partition: Partition, offset: int) -> Entry:
        entry = Entry(partition, offset)
        with self._lock:
            self._partitions.setdefault(partition, deque()).append(entry)
            self._unfinished += 1
        return entry

    def finish(self, entry: Entry, records: list[OutgoingRecord]) -> bool:
        """Record an entry's outcome; False when its partition was dropped meanwhile."""
        with self._lock:
            if entry.dropped or entry.records is not None:
                return False
            entry.records = records
            self._unfinished -= 1
            return True

    def unfinished(self, partitions: Iterable[Partition] | None = None) -> int:
        with self._lock:
            if partitions is None:
                return self._unfinished
            return sum(1 for p in partitions for e in self._partitions.get(p, ()) if e.records is None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._partitions.values())

    def take_finished(self, partitions: Iterable[Partition] | None = None) -> Taken:
        taken = Taken()
        with self._lock:
            for partition in list(partitions if partitions is not None else self._partitions):
                entries = self._partitions.get(partition)
                while entries and entries[0].records is not None:
                    entry = entries.popleft()
                    taken.first.setdefault(partition, entry.offset)
                    taken.outcomes.setdefault(partition, []).extend(entry.records)
                    taken.offsets[partition] = entry.offset + 1
                    taken.inputs[partition] = taken.inputs.get(partition, 0) + 1
                if entries is not None and not entries:
                    del self._partitions[partition]
        return taken

    def drop(self, partitions: Iterable[Partition] | None = None) -> list[Entry]:
        """Forget these partitions (all when None); returns their unfinished entries, now void."""
        void = []
        with self._lock:
            for partition in list(partitions if partitions is not None else self._partitions):
                for entry in self._partitions.pop(partition, ()):
                    entry.dropped = True
                    if entry.records is None:
                        void.append(entry)
                        self._unfinished -= 1
        return void
