"""Hanging transactions on the embedded Kafka, found and aborted when a node starts again.

Stopping the only broker of a partition while a transaction commits can leave that
transaction open on the partition for good: in a controlled shutdown the partitions lose
their leader first, and the transaction coordinator, still committing, skips writing markers
to partitions without a leader ("Couldn't find leader endpoint ... likely deleted already and
hence can be skipped", broker log) and records the transaction as complete. Nothing ever
closes it, so every read_committed reader of such a partition stops at it, and a group whose
offsets it holds can no longer read them. `herald chaos --scenario broker-stop` hit this once
in a run of its own: the router's commit was under way when the broker stopped, the router's
group and two request partitions stalled, and 2,994 of 3,400 notifications were never sent.

On a cluster of three the partitions' leadership moves instead, and markers follow it. For the
embedded broker, Kafka's own `kafka-transactions.sh` logic (`TransactionsCommand`, from the
jars the broker runs) lists, after a restart, the transactions open on each node's partitions
that their coordinator does not know, and aborts each one: its records are dropped for
read_committed readers and its pending offsets with them, so the stage that wrote it reads
that input again and writes it anew (the router's request ids are deterministic; providers
dedupe a repeated send by its idempotency key). A live transaction is known to its coordinator
and so never taken for a hanging one; as the tool does it, only those open a minute or more
are candidates at all (its unit is minutes; Herald's transactions time out within 30 s). So a
broker stopped for less than about a minute is not searched: `kafka-transactions.sh
find-hanging` does that by hand (docs/operators.md).
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)
TRANSACTIONS_TOOL = "org.apache.kafka.tools.TransactionsCommand"
MIN_AGE_MINUTES = 1  # open at least this long (longer than any transaction timeout of ours)


@dataclass(frozen=True)
class HangingTransaction:
    topic: str
    partition: int
    producer_id: int
    start_offset: int


def parse_hanging(table: str) -> list[HangingTransaction]:
    """The rows of `find-hanging`'s table (tab-separated, padded, one header line)."""
    rows = [line.split("\t") for line in table.splitlines() if "\t" in line]
    if not rows or rows[0][0].strip() != "Topic":
        return []
    header = [cell.strip() for cell in rows[0]]
    found = []
    for row in rows[1:]:
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        found.append(HangingTransaction(cells["Topic"], int(cells["Partition"]), int(cells["ProducerId"]),
                                        int(cells["StartOffset"])))
    return found


def abort_hanging_transactions(java: str, classpath: str, bootstrap: str,
                               broker_ids: list[int]) -> list[HangingTransaction]:
    """Find the transactions hanging on these brokers' partitions and abort each; returns them.
    A failing tool is logged, not raised: the broker runs either way."""
    aborted: list[HangingTransaction] = []
    try:
        for broker_id in broker_ids:
            aborted += _abort_on(java, classpath, bootstrap, broker_id)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log.error("could not look for hanging transactions (%s); `kafka-transactions.sh find-hanging` "
                  "does it by hand (docs/operators.md)", exc)
    return aborted


def _abort_on(java: str, classpath: str, bootstrap: str, broker_id: int) -> list[HangingTransaction]:
    aborted = []
    table = _tool(java, classpath, bootstrap, "find-hanging", "--broker-id", str(broker_id),
                  "--max-transaction-timeout", str(MIN_AGE_MINUTES))
    for hanging in parse_hanging(table):
        log.warning("aborting a hanging transaction on %s[%d] (producer %d, from offset %d): "
                    "its markers were skipped while the broker stopped", hanging.topic,
                    hanging.partition, hanging.producer_id, hanging.start_offset)
        _tool(java, classpath, bootstrap, "abort", "--topic", hanging.topic, "--partition",
              str(hanging.partition), "--start-offset", str(hanging.start_offset))
        aborted.append(hanging)
    return aborted


def _tool(java: str, classpath: str, bootstrap: str, *args: str) -> str:
    result = subprocess.run([java, "-Xmx128m", "-cp", classpath, TRANSACTIONS_TOOL, "--bootstrap-server",
                             bootstrap, *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"kafka-transactions {args[0]} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout
