"""Which Kafka answers the group views ask again: a leader moving, not a refusal."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from herald.infra.kafka_views import _retriable


@pytest.mark.parametrize("code, again", [
    (KafkaError.NOT_LEADER_FOR_PARTITION, True),
    (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, True),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
    (KafkaError.GROUP_AUTHORIZATION_FAILED, False),
])
def test_a_settling_leader_is_asked_again_and_a_refusal_is_not(code, again):
    assert _retriable(KafkaException(KafkaError(code))) is again


def test_a_timeout_is_not_asked_again_here():
    assert _retriable(TimeoutError()) is False
