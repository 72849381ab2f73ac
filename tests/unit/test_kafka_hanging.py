"""Hanging transactions after an embedded broker restart: Kafka's tool's table read, and each
row aborted at its partition and first offset; a failing tool is logged, never raised."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from herald.infra import kafka_hanging
from herald.infra.kafka_hanging import HangingTransaction, abort_hanging_transactions, parse_hanging

# What `find-hanging --broker-id 1` printed here after a broker-stop chaos run (2026-12-03).
FOUND = (
    "Topic                 \tPartition\tProducerId\tProducerEpoch\tCoordinatorEpoch\tStartOffset\t"
    "LastTimestamp\tDuration(min)\t\n"
    "notifications.email   \t4        \t3         \t0            \t0               \t103        \t"
    "1796277321818\t20           \t\n"
    "__consumer_offsets    \t4        \t3         \t0            \t0               \t527        \t"
    "1796277321841\t20           \t\n"
)
NONE = ("Topic\tPartition\tProducerId\tProducerEpoch\tCoordinatorEpoch\tStartOffset\tLastTimestamp\t"
        "Duration(min)\t\n")


def test_the_tools_table_gives_each_hanging_transactions_partition_and_first_offset():
    assert parse_hanging(FOUND) == [HangingTransaction("notifications.email", 4, 3, 103),
                                    HangingTransaction("__consumer_offsets", 4, 3, 527)]
    assert parse_hanging(NONE) == [] and parse_hanging("") == []


class Tool:
    """subprocess.run for the TransactionsCommand: find-hanging answers from a script."""

    def __init__(self, tables: dict[str, str], fail: bool = False) -> None:
        self.tables, self.fail, self.calls = tables, fail, []

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        args = argv[argv.index("--bootstrap-server") + 2:]
        self.calls.append(args)
        if self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "Timed out waiting for a node assignment")
        table = self.tables.get(args[2], NONE) if args[0] == "find-hanging" else ""
        return subprocess.CompletedProcess(argv, 0, table, "")


def test_each_hanging_transaction_of_each_restarted_broker_is_aborted(monkeypatch: pytest.MonkeyPatch):
    tool = Tool({"1": FOUND})
    monkeypatch.setattr(kafka_hanging.subprocess, "run", tool)
    aborted = abort_hanging_transactions("java", "cp", "127.0.0.1:9092", [1, 2])
    assert [h.topic for h in aborted] == ["notifications.email", "__consumer_offsets"]
    assert tool.calls == [
        ["find-hanging", "--broker-id", "1", "--max-transaction-timeout", "1"],
        ["abort", "--topic", "notifications.email", "--partition", "4", "--start-offset", "103"],
        ["abort", "--topic", "__consumer_offsets", "--partition", "4", "--start-offset", "527"],
        ["find-hanging", "--broker-id", "2", "--max-transaction-timeout", "1"],
    ]


def test_a_failing_tool_is_logged_and_the_start_goes_on(monkeypatch: pytest.MonkeyPatch, caplog):
    monkeypatch.setattr(kafka_hanging.subprocess, "run", Tool({}, fail=True))
    assert abort_hanging_transactions("java", "cp", "127.0.0.1:9092", [1]) == []
    assert "could not look for hanging transactions" in caplog.text
    assert "find-hanging failed" in caplog.text
