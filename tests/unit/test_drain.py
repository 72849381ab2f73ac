"""A draining worker stops only at the end of every assigned partition, never on idle polls."""

from __future__ import annotations

import pytest

from herald.consumers.commits import PartitionEnd

UNKNOWN = -1001  # librdkafka's OFFSET_INVALID


@pytest.mark.parametrize(("end", "reached"), [
    (PartitionEnd(position=52, committed=UNKNOWN, low=0, high=52), True),
    (PartitionEnd(position=40, committed=30, low=0, high=52), False),
    # assigned, but the first fetch has not happened (e.g. the coordinator is loading)
    (PartitionEnd(position=UNKNOWN, committed=UNKNOWN, low=0, high=52), False),
    (PartitionEnd(position=UNKNOWN, committed=52, low=0, high=52), True),
    (PartitionEnd(position=UNKNOWN, committed=10, low=0, high=52), False),
    # an empty partition, and one whose records all aged out
    (PartitionEnd(position=UNKNOWN, committed=UNKNOWN, low=0, high=0), True),
    (PartitionEnd(position=UNKNOWN, committed=UNKNOWN, low=7, high=7), True),
])
def test_partition_end_is_reached_only_when_nothing_is_left_to_read(end: PartitionEnd, reached: bool) -> None:
    assert end.reached() is reached
