"""Faust's aiokafka transport, made to read committed records only and to commit past markers.

Faust reads `read_committed` only under its own exactly-once guarantee (a transactional
producer per partition); at least once, it reads every record a transaction wrote, aborted
ones included. Herald's delivery workers write `notifications.status` in transactions and
abort them on failure, so an aborted `sent` would count as delivered (the missing detector
would never alert) and be counted twice by the status stats. Here the worker consumer reads
committed records only, and its committed offsets step over the commit markers after the
last record (`ReadPositions`), so a caught-up group shows lag 0 as Kafka's tools see it.

This reaches into two private spots, each pinned by `constraints.txt` and tested by
`tests/integration/test_streams_committed_reads.py`: aiokafka's consumer keeps its isolation
level in `_isolation_level` until it starts, and a fetch's positions in its subscription
state (where Faust's own `_fetch_records` reaches too).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from herald.infra.read_positions import ReadPositions

READ_COMMITTED = "read_committed"


class CommittedReadsThread(faust_aiokafka.AIOKafkaConsumerThread):
    consumer: CommittedReadsConsumer
    # mode waits 60 s for the thread's loop to end; with the broker down, aiokafka's close
    # retries all that time, and a worker told to stop took a minute to exit.
    shutdown_timeout = 5.0

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = READ_COMMITTED  # read when it starts, which is later
        return consumer

    async def _fetch_records(self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: Any,
                             timeout: float | None = None, max_records: int | None = None) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        read = self.consumer.read_positions
        for tp, messages in records.items():  # before Faust sees them: see ReadPositions
            if messages:
                read.handed_over(TP(tp.topic, tp.partition), messages[-1].offset)
        for tp, position in _positions(consumer):
            read.reached(TP(tp.topic, tp.partition), position)
        return records


class CommittedReadsConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.read_positions = ReadPositions()
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> CommittedReadsThread:
        return CommittedReadsThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's offset to commit (the acked prefix), moved past markers that follow it; also
        for a partition with nothing newly acked, so an idle one reaches lag 0."""
        offset = super()._new_offset(tp)
        base = offset if offset is not None else self._committed_offset[tp]
        if base is None:
            return offset
        moved = self.read_positions.resume_offset(tp, base)
        return moved if moved != base else offset


class CommittedReadsTransport(faust_aiokafka.Transport):
    Consumer = CommittedReadsConsumer


def read_committed_only(app: faust.App) -> None:
    """Give `app` the transport above; before anything has used the default one."""
    app.transport = CommittedReadsTransport(app.conf.broker_consumer, app)


def _positions(consumer: aiokafka.AIOKafkaConsumer) -> Iterator[tuple[Any, int]]:
    """Each assigned partition's position, where known, without waiting for one."""
    assignment = consumer._subscription.subscription.assignment if consumer._subscription.subscription \
        else None
    for tp in assignment.tps if assignment is not None else ():
        state = assignment.state_value(tp)
        if state.has_valid_position:
            yield tp, state.position
