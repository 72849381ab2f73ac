from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from herald.proving.demo import _group_readiness, writer_threads


def failed(code: int) -> Future:
    future: Future = Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


@pytest.mark.parametrize("code", [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                  KafkaError.COORDINATOR_NOT_AVAILABLE])
def test_a_coordinator_still_loading_means_not_ready_yet(code):
    assert _group_readiness(failed(code)).startswith("coordinator not ready")


def test_other_errors_are_raised():
    with pytest.raises(KafkaException):
        _group_readiness(failed(KafkaError.GROUP_AUTHORIZATION_FAILED))


def test_a_paced_writer_has_threads_enough_for_slow_registrations_and_a_burst_four():
    assert writer_threads(0.0) == 4
    assert writer_threads(10.0) == 4
    assert writer_threads(100.0) == 20  # 0.2 s each at 100/s
