"""A transaction takes only the finished prefix of each partition; dropped work stays void."""

from herald.consumers.inflight import InFlight
from herald.schemas.records import OutgoingRecord

P0, P1 = ("notifications.email", 0), ("notifications.email", 1)


def outcome(name: str) -> list[OutgoingRecord]:
    return [OutgoingRecord("notifications.status", name.encode(), b"v", {})]


def test_a_record_finished_behind_an_unfinished_one_waits():
    inflight = InFlight()
    first, second, third = (inflight.start(P0, offset) for offset in (10, 11, 12))
    inflight.finish(second, outcome("b"))
    inflight.finish(third, outcome("c"))
    assert not inflight.take_finished(), "offset 10 is still in flight: nothing may commit"
    inflight.finish(first, outcome("a"))
    taken = inflight.take_finished()
    assert [r.key for r in taken.records] == [b"a", b"b", b"c"], "outcomes in offset order"
    assert (taken.offsets, taken.first, taken.input_count) == ({P0: 13}, {P0: 10}, 3)
    assert len(inflight) == 0 and inflight.unfinished() == 0


def test_partitions_advance_independently():
    inflight = InFlight()
    slow = inflight.start(P0, 5)
    fast = inflight.start(P1, 7)
    inflight.finish(fast, outcome("fast"))
    taken = inflight.take_finished()
    assert taken.offsets == {P1: 8}
    assert inflight.unfinished([P0]) == 1 and inflight.unfinished([P1]) == 0
    inflight.finish(slow, [])
    assert inflight.take_finished([P0]).offsets == {P0: 6}, "no outcome records, offset still moves"


def test_a_dropped_partitions_late_outcome_is_void():
    inflight = InFlight()
    entry = inflight.start(P0, 3)
    done = inflight.start(P0, 4)
    inflight.finish(done, outcome("done"))
    void = inflight.drop([P0])
    assert void == [entry], "only the unfinished entry needs cancelling"
    assert inflight.finish(entry, outcome("late")) is False
    assert not inflight.take_finished() and inflight.unfinished() == 0
    again = inflight.start(P0, 3)  # the partition is read again from the rewound offset
    inflight.finish(again, outcome("again"))
    assert [r.key for r in inflight.take_finished().records] == [b"again"]


def test_an_entry_is_finished_once():
    inflight = InFlight()
    entry = inflight.start(P0, 1)
    assert inflight.finish(entry, outcome("one")) is True
    assert inflight.finish(entry, outcome("two")) is False
    assert [r.key for r in inflight.take_finished().records] == [b"one"]


def test_what_was_taken_can_be_narrowed_to_the_partitions_still_owned():
    inflight = InFlight()
    for partition, offset in ((P0, 1), (P1, 2), (P1, 3)):
        inflight.finish(inflight.start(partition, offset), outcome(f"{partition[1]}-{offset}"))
    taken = inflight.take_finished()
    kept = taken.only({P1})
    assert [r.key for r in kept.records] == [b"1-2", b"1-3"]
    assert (kept.offsets, kept.first, kept.input_count) == ({P1: 4}, {P1: 2}, 2)
    assert not taken.only(set())
