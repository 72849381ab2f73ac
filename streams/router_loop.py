"""The router as a transactional consume-transform-produce loop on confluent-kafka.

The router holds no state, so it need not be a Faust app: on librdkafka it spends a tenth of
the CPU per event a Faust agent did (0.029 against 0.299 ms, `herald bench streams`). Each
batch is one Kafka transaction (`Checkpoint`): the requests it derived and its input
offsets commit together or not at all, so a router killed mid-batch neither loses nor
repeats a request, and it reads committed records only.

- A batch is what has already been fetched when the first record arrives (up to
  `max_batch`): one event alone at a steady trickle, thousands from a backlog, so latency
  stays low and a backlog is worked through in large transactions.
- A batch that cannot be committed (the broker away, the transaction refused) is rewound:
  its partitions are sought back to its first offsets and routed again. Routing is pure and
  its record ids are derived from the input, so the retry produces the same records.
- Rebalances run inside `poll`, between batches, when nothing is uncommitted: a revoked
  partition has nothing to finish.
- Committed offsets step over the transaction markers behind the last record (the relay's
  topics may be written in transactions), so a caught-up group shows lag 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from herald.infra import tracing
from herald.infra.checkpoint import Checkpoint, Partition, Taken
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import fail_on_fatal, fetch_batch, partition_names, seek_back
from herald.infra.read_positions import Owned, ReadPositions, note_fetched
from herald.schemas.headers import TRACEPARENT, from_kafka, utc_now_iso
from herald.schemas.records import SourceRecord
from herald.streams.router import Router

log = logging.getLogger(__name__)


@dataclass
class RouterStats:
    """Countable outcomes: tests assert these instead of sleeping."""

    consumed: int = 0  # records routed (again, after a rewind)
    produced: int = 0  # requests and dead letters handed to a transaction
    committed: int = 0  # inputs whose offsets a transaction committed
    transactions: int = 0
    failed_transactions: int = 0
    rewound: int = 0  # inputs routed again because their batch could not be committed
    consumer_errors: int = 0


@dataclass(frozen=True)
class RouterLoopConfig:
    group: str  # the consumer group, and the prefix of the transactional ids
    namespace: str
    topics: dict[str, str]  # event topics as on the broker -> as the catalog names them
    # Inputs in one transaction at most: each commit waits on the broker (40-70 ms for 5,000 in
    # `herald bench streams`), so a backlog goes faster in larger ones (5,000: 19,035-21,934
    # events/s in three runs; 20,000: 23,692 and 25,263 in two). A trickle makes small ones.
    max_batch: int = 20000
    poll_timeout_s: float = 0.1  # how long an idle loop waits for a first record
    transaction_timeout_s: float = 10.0  # also how long a killed router's open batch blocks readers
    idle_commit_s: float = 1.0  # how often an idle loop commits its offsets past trailing markers
    instance_id: str = ""  # the process's static identity, if it has one (see Checkpoint)


class RouterLoop:
    def __init__(self, config: RouterLoopConfig, router: Router, consumer: Consumer,
                 new_producer: Callable[[str], Producer]) -> None:
        self.config = config
        self._router = router
        self._consumer = consumer
        self._read = ReadPositions()
        self._owned = Owned()  # kept by the rebalance callbacks
        self.stats = RouterStats()
        self.checkpoint = Checkpoint(consumer, new_producer, transactional_prefix=config.group,
                                     instance_id=config.instance_id, namespace=config.namespace,
                                     transaction_timeout_s=config.transaction_timeout_s, counts=self.stats)
        self._idle_commit = Deadline(config.idle_commit_s)
        self._spans: list[tracing.Span] | None = [] if tracing.enabled() else None

    def run(self, stop: threading.Event) -> RouterStats:
        """Route until `stop` is set; the last batch is committed (or rewound) before leaving."""
        self._consumer.subscribe(list(self.config.topics), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.checkpoint.ready()  # its producer now, not at the first event (half a second)
        try:
            while not stop.is_set():
                if not self.step():
                    stop.wait(0.2)  # the broker is away: ask again shortly, not in a spin
        finally:
            self._consumer.close()  # leaves the group at once, so a sibling takes over fast
        return self.stats

    def step(self) -> bool:
        """One batch fetched, routed and committed; False when it had to be rewound."""
        messages = self._fetch()
        if not messages:
            if self._idle_commit.expired():
                self._idle_commit = Deadline(self.config.idle_commit_s)
                return self._commit(self._past_markers(Taken()))
            return True
        committed = self._commit(self._past_markers(self._route(messages)))
        if self._spans:
            for span in self._spans:  # each from its routing to its batch's commit
                tracing.end_span(span, None if committed else "Rewound")
            self._spans.clear()
        return committed

    def _route_span(self, source: SourceRecord) -> str:
        """While tracing: a span for routing `source`, the parent of the requests it derives."""
        assert self._spans is not None
        span = tracing.span_under(source.headers.get(TRACEPARENT), f"route {source.topic}",
                                  tracing.SpanKind.CONSUMER,
                                  {"messaging.system": "kafka", "messaging.source.name": source.topic,
                                   "messaging.kafka.source.partition": source.partition,
                                   "messaging.kafka.message.offset": source.offset})
        self._spans.append(span)
        return tracing.traceparent_of(span)

    def _fetch(self) -> list[Message]:
        """Wait briefly for one record, then take what else is already fetched; note where each
        partition stands, also when nothing came (a marker may have been read past)."""
        messages = fetch_batch(self._consumer, self.config.max_batch, self.config.poll_timeout_s)
        note_fetched(self._read, self._consumer, self._owned, messages)
        return messages

    def _route(self, messages: list[Message]) -> Taken:
        taken, topics, route = Taken(), self.config.topics, self._router.route
        produced_at = utc_now_iso()  # one reading of the clock for the batch
        for message in messages:
            if (error := message.error()) is not None:
                fail_on_fatal(error)
                self.stats.consumer_errors += 1
                log.warning("consumer error: %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            key = (topic, partition)
            source = SourceRecord(topics[topic], partition, offset, message.key(), message.value(),
                                  from_kafka(message.headers()))
            records = route(source, produced_at) if self._spans is None else \
                route(source, produced_at, self._route_span(source))
            if key in taken.outcomes:
                taken.outcomes[key].extend(records)
                taken.inputs[key] += 1
            else:
                taken.outcomes[key], taken.first[key], taken.inputs[key] = records, offset, 1
            taken.offsets[key] = offset + 1
            self.stats.produced += len(records)
        self.stats.consumed += taken.input_count
        return taken

    def _past_markers(self, taken: Taken) -> Taken:
        """Offsets moved past the markers behind them; an idle partition's committed offset too,
        when markers came after it, so a caught-up group shows lag 0."""
        for partition, offset in self.checkpoint.committed.items():
            if partition not in taken.offsets:
                moved = self._read.resume_offset(partition, offset)
                if moved != offset:
                    taken.offsets[partition] = moved
        for partition, offset in taken.offsets.items():
            taken.offsets[partition] = self._read.resume_offset(partition, offset)
        return taken

    def _commit(self, taken: Taken) -> bool:
        if not taken:
            return True
        if not self.checkpoint.ready():
            self._rewind(taken)
            return False
        left = self.checkpoint.commit(taken)
        if left:
            self._rewind(left)
        return not left

    def _rewind(self, taken: Taken) -> None:
        """Seek the batch's partitions back to its first offsets: it is fetched and routed again."""
        self.stats.rewound += taken.input_count
        self._read.forget(taken.first)
        seek_back(self._consumer, taken.first, log)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("%s: partitions assigned: %s", self.config.group, partition_names(partitions))
        self._owned.add(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Between batches: everything routed is committed or rewound already."""
        log.info("%s: partitions revoked: %s", self.config.group, partition_names(partitions))
        self._let_go(partitions)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("%s: partitions lost (the group moved on without us): %s", self.config.group,
                    partition_names(partitions))
        self._let_go(partitions)

    def _let_go(self, partitions: list[TopicPartition]) -> None:
        revoked: list[Partition] = [(tp.topic, tp.partition) for tp in partitions]
        self._owned.remove(partitions)
        self._read.forget(revoked)
        self.checkpoint.forget(revoked)
