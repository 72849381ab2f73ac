import subprocess
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, TopicPartition

from herald.infra.kafka_io import process_client_id
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


def described(*client_ids: str) -> Future:
    """A stable group whose members (named by `client_ids`) each hold a partition."""
    members = [SimpleNamespace(client_id=client_id, assignment=SimpleNamespace(
        topic_partitions=[TopicPartition("t", n)])) for n, client_id in enumerate(client_ids)]
    future: Future = Future()
    future.set_result(SimpleNamespace(state=ConsumerGroupState.STABLE, members=members))
    return future


def test_a_stable_group_is_not_ready_while_it_lists_a_member_of_a_stopped_process():
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale = f"herald-router-{finished.pid}"
    assert _group_readiness(described(stale)) == \
        f"members of stopped processes still listed (pids {finished.pid})"
    assert _group_readiness(described(stale, process_client_id("router"))).startswith("members of stopped")
    assert _group_readiness(described(process_client_id("router"))) == "ready"
    assert _group_readiness(described("rdkafka")) == "ready"  # a client id naming no process: as before
