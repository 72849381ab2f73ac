"""A stage fenced out of its group gets a new consumer a few times, then the error is raised;
any other error is raised at once."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from herald.ops.rejoin import MAX_REJOINS, WINDOW_S, fenced, run_rejoining

# As librdkafka delivered it in broker-of-three-kill (2026-12-03).
FENCED = KafkaException(KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by "
                                   "other consumer with same group.instance.id"))


class Stage:
    """run_once: raises each scripted error in turn, then returns how many runs it took."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.runs = list(errors), 0

    def __call__(self) -> int:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.runs


def test_a_fenced_stage_rejoins_with_a_new_consumer_and_goes_on():
    stage = Stage(FENCED, FENCED)
    assert run_rejoining(stage, "the router", threading.Event()) == 3


def test_fenced_more_than_the_budget_within_the_window_is_raised():
    now = [0.0]
    stage = Stage(*[FENCED] * (MAX_REJOINS + 1))
    with pytest.raises(KafkaException, match="Static consumer fenced"):
        run_rejoining(stage, "the router", threading.Event(), clock=lambda: now[0])
    assert stage.runs == MAX_REJOINS + 1
    # Spread over more than the window, as many fencings are each rejoined.
    spread = Stage(*[FENCED] * (MAX_REJOINS + 1))

    def later() -> float:
        now[0] += WINDOW_S
        return now[0]

    assert run_rejoining(spread, "the router", threading.Event(), clock=later) == MAX_REJOINS + 2


def test_other_errors_and_a_fencing_while_stopping_are_raised_at_once():
    broken = Stage(KafkaException(KafkaError(KafkaError._TRANSPORT, "broker gone")))
    with pytest.raises(KafkaException, match="broker gone"):
        run_rejoining(broken, "the router", threading.Event())
    assert broken.runs == 1
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(KafkaException):
        run_rejoining(Stage(FENCED), "the router", stopping)
    assert fenced(FENCED) and not fenced(ValueError("x")) and not fenced(KafkaException("text"))
