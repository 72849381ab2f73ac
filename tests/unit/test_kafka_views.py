"""Which Kafka answers the group views ask again: a leader moving, not a refusal."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from herald.infra.kafka_io import settling


@pytest.mark.parametrize("code, again", [
    (KafkaError.NOT_LEADER_FOR_PARTITION, True),
    (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, True),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
    (KafkaError.GROUP_AUTHORIZATION_FAILED, False),
])
def test_a_settling_leader_is_asked_again_and_a_refusal_is_not(code, again):
    assert settling(KafkaException(KafkaError(code))) is again


def test_a_timeout_is_not_asked_again_here():
    assert settling(TimeoutError()) is False


def test_group_views_asks_again_while_leadership_settles_for_as_long_as_its_timeout(monkeypatch):
    """Five 'not leader' answers in a row (2.5 s of settling), then an answer: a view, not an error."""
    from herald.infra import kafka_views

    answers = [KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))] * 5
    monkeypatch.setattr(kafka_views.time, "sleep", lambda _s: None)

    def group_offsets(_admin, _groups, _timeout_s):
        if answers:
            raise answers.pop()
        return {"g": ("Stable", 1, ("c@h",))}, {"g": {}}, {}, {}

    monkeypatch.setattr(kafka_views, "_group_offsets", group_offsets)
    views = kafka_views.group_views("127.0.0.1:9", [("g", ("t",))], timeout_s=10.0)
    assert not answers and views["g"].members == 1 and views["g"].lag == 0


def test_group_views_gives_up_on_an_answer_that_will_not_change(monkeypatch):
    from herald.infra import kafka_views

    def group_offsets(_admin, _groups, _timeout_s):
        raise KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))

    monkeypatch.setattr(kafka_views, "_group_offsets", group_offsets)
    with pytest.raises(kafka_views.KafkaUnavailable, match="GROUP_AUTHORIZATION_FAILED"):
        kafka_views.group_views("127.0.0.1:9", [("g", ("t",))], timeout_s=10.0)
