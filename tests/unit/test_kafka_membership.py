"""How long-lived group members are configured: static with an instance id, dynamic without;
a fatal client error among fetched records is raised, a passing one dropped; a process group
names its members and waits for them to say they are ready."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import KafkaError, KafkaException

from herald.infra.deadline import Deadline
from herald.infra.kafka_io import client_pid, membership_config, process_client_id, records_only
from herald.infra.processes import ProcessGroup, ServiceError


def test_an_instance_id_makes_a_static_member_and_none_a_dynamic_one():
    static = membership_config(6.0, "host-a-deliver-email", "herald-deliver-42")
    assert static == {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                      "group.instance.id": "host-a-deliver-email", "client.id": "herald-deliver-42"}
    dynamic = membership_config(1.5)
    assert dynamic == {"session.timeout.ms": 1500, "heartbeat.interval.ms": 500}


def test_a_process_client_id_names_its_process_and_another_client_id_none():
    assert client_pid(process_client_id("streams-missing")) == os.getpid()
    assert client_pid("herald-deliver-42") == 42
    assert client_pid("rdkafka") is None
    assert client_pid("faust-0.15.3") is None
    assert client_pid("herald-router") is None


class Fetched:
    def __init__(self, error: KafkaError | None) -> None:
        self._error = error

    def error(self) -> KafkaError | None:
        return self._error


def test_records_only_drops_a_passing_error_and_raises_a_fatal_one():
    record, passing = Fetched(None), Fetched(KafkaError(KafkaError._TRANSPORT, "broker gone"))
    assert records_only([record, passing, record]) == [record, record]  # type: ignore[list-item]
    fatal = Fetched(KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True))
    with pytest.raises(KafkaException, match="fenced"):
        records_only([record, fatal])  # type: ignore[list-item]
    # As librdkafka delivered it in broker-of-three-kill: code _FATAL, the flag not set.
    unflagged = Fetched(KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced"))
    assert not unflagged.error().fatal()  # type: ignore[union-attr]
    with pytest.raises(KafkaException, match="Static consumer fenced"):
        records_only([unflagged])  # type: ignore[list-item]


def test_a_process_started_again_under_its_name_keeps_its_instance_id(tmp_path):
    with ProcessGroup(tmp_path, {}) as group:
        ids = []
        for name in ("router", "router", "deliver-email"):
            process = group.start(name, ["sh", "-c", "echo $HERALD_INSTANCE_ID"])
            process.wait()
            ids.append(group.log_path(name).read_text().strip())
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].endswith("-router") and ids[2].endswith("-deliver-email")


def test_waiting_for_a_logged_line_ends_once_each_process_said_it_or_names_who_did_not(tmp_path):
    with ProcessGroup(tmp_path, {}) as group:
        group.start("missing", ["sh", "-c", "sleep 0.3; echo 'streams missing: ready'; sleep 5"])
        group.start("status", ["sh", "-c", "echo 'streams status: ready'; sleep 5"])
        group.wait_for_logged(["missing", "status"], "ready", Deadline(10), interval_s=0.05)
        assert "ready" in group.log_path("missing").read_text()

        group.start("silent", ["sh", "-c", "echo starting; sleep 5"])
        with pytest.raises(ServiceError, match=r"^silent: no 'ready' in the log in time"):
            group.wait_for_logged(["status", "silent"], "ready", Deadline(0.3), interval_s=0.05)

        group.start("crashed", ["sh", "-c", "echo starting; exit 3"])
        with pytest.raises(ServiceError, match="crashed exited with status 3"):
            group.wait_for_logged(["crashed"], "ready", Deadline(10), interval_s=0.05)
