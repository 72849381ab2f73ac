"""A draining consumer asks again when a leader moves, instead of failing the drain."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from herald.consumers.commits import caught_up


class ConsumerWhoseLeaderMoves:
    """Answers positions and commits; its watermark request fails with `code`, then works."""

    def __init__(self, code: int, failures: int = 1) -> None:
        self._code, self._failures = code, failures

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("t", 0)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("t", 0, 10)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition("t", 0, 10)]

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        if self._failures:
            self._failures -= 1
            raise KafkaException(KafkaError(self._code, "Failed to get watermark offsets"))
        return 0, 10


def test_a_moving_leader_is_not_caught_up_yet_and_the_next_look_is():
    consumer = ConsumerWhoseLeaderMoves(KafkaError.NOT_LEADER_FOR_PARTITION)
    assert caught_up(consumer) is False  # type: ignore[arg-type]
    assert caught_up(consumer) is True  # type: ignore[arg-type]


def test_an_error_that_will_not_pass_is_raised():
    consumer = ConsumerWhoseLeaderMoves(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        caught_up(consumer)  # type: ignore[arg-type]
