"""When a committed offset may step over transaction markers: only across offsets the consumer
skipped right after the last record it handed over, never past a record it handed over later."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from herald.infra.read_positions import Owned, ReadPositions

P = ("t", 0)


def test_an_offset_right_after_the_last_record_moves_to_the_position_past_the_marker():
    read = ReadPositions()
    read.handed_over(P, 2)
    read.reached(P, 4)  # offset 3 was a commit marker
    assert read.resume_offset(P, 3) == 4
    assert read.resume_offset(P, 2) == 2, "record 2 not finished yet: nothing moves"
    assert read.resume_offset(("t", 1), 3) == 3, "another partition knows nothing"


def test_a_record_handed_over_after_the_position_ends_the_stretch():
    read = ReadPositions()
    read.handed_over(P, 2)
    read.reached(P, 4)
    read.handed_over(P, 6)  # a new transaction's record: 5 was the previous one's marker too
    assert read.resume_offset(P, 3) == 3, "the stretch ended at 6's fetch; 4 and 5 are unknown now"
    read.reached(P, 8)
    assert read.resume_offset(P, 7) == 8


def test_a_position_behind_the_stretch_after_a_seek_changes_nothing():
    read = ReadPositions()
    read.handed_over(P, 9)
    read.reached(P, 11)
    read.reached(P, 5)  # sought back to 5
    assert read.resume_offset(P, 10) == 11, "the log did not change: 10 is still a marker"
    read.forget([P])
    assert read.resume_offset(P, 10) == 10


def test_nothing_is_known_before_a_record_is_handed_over():
    read = ReadPositions()
    read.reached(P, 7)
    assert read.resume_offset(P, 3) == 3


def test_owned_partitions_follow_the_assignments_and_revocations_they_are_told():
    owned = Owned()
    owned.add([TopicPartition("t", 1), TopicPartition("t", 0)])
    owned.add([TopicPartition("u", 0)])  # a cooperative rebalance adds to what was owned
    owned.remove([TopicPartition("t", 1), TopicPartition("t", 5)])  # one never owned: no error
    assert [(tp.topic, tp.partition) for tp in owned.topic_partitions()] == [("t", 0), ("u", 0)]
