"""Health knows the stages the pipeline needs: a caught-up group shows lag 0 (also on a
transactional topic), a killed router fails health within its session timeout, and
`herald health`, /v1/health, /metrics and Kafka's own kafka-consumer-groups agree."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
from confluent_kafka import Producer
from sqlalchemy.orm import Session

from herald.examples.registrations.app import register
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup, free_port
from herald.infra.services import embedded_kafka
from herald.ops.api_tokens import create_token
from herald.ops.pipeline import stream_inputs, streams_app_id
from herald.proving.demo import wait_for_groups
from herald.schemas.catalog import NOTIFICATION_STATUS, qualified
from tests.catalogs import example
from tests.integration.test_status_stats import outcomes, produce_in_transaction
from tests.support import HERALD, process_env, wait_until

CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def health_json(settings) -> tuple[int, dict]:
    result = subprocess.run([*HERALD, "health", "--json"], env=process_env(settings), capture_output=True,
                            text=True, timeout=120)
    return result.returncode, json.loads(result.stdout)


def kafka_tool(base_settings, bootstrap: str, group: str, topics: tuple[str, ...]) -> tuple[int | None, int]:
    """(the LAG column summed over `topics`, #MEMBERS) as kafka-consumer-groups prints them (it
    also lists a Faust group's changelog partitions, which it never commits).

    A partition the group never committed shows LAG "-": it starts at the earliest record, and
    nothing was trimmed from these new topics, so its LOG-END-OFFSET is what waits for it."""
    def describe(*extra: str) -> list[list[str]]:
        result = subprocess.run(["java", "-cp", embedded_kafka(base_settings).classpath(),
                                 CONSUMER_GROUP_COMMAND, "--bootstrap-server", bootstrap, "--describe",
                                 "--group", group, *extra], capture_output=True, text=True, timeout=120,
                                check=True)
        return [row for row in (line.split() for line in result.stdout.splitlines()) if row[:1] == [group]]

    rows = [row for row in describe() if row[1] in topics]
    total = sum(int(row[5]) if row[5] != "-" else int(row[4]) for row in rows) if rows else None
    (state_row,) = describe("--state")
    return total, int(state_row[-1])


def stage(report: dict, name: str) -> dict:
    return next(check for check in report["checks"] if check["name"] == f"stage {name}")


def write_registrations(engine, prefix: str, count: int) -> None:
    for n in range(count):
        with Session(engine) as session, session.begin():
            register(session, registration_id=f"{prefix}-{n:03d}", participant_name="Rina",
                     phone="+6281300000000", email="rina@example.test")


def test_a_killed_router_fails_health_and_every_view_agrees_with_kafkas_tool(base_settings, settings, engine,
                                                                            log_dir):
    settings = dataclasses.replace(settings, health_stages=("relay", "router", "status"),
                                   health_max_lag_s=3.0, status_stats_flush_interval_s=0.3,
                                   api_port=free_port())
    router, counter = streams_app_id(settings, "router"), streams_app_id(settings, "status")
    inputs = {name: tuple(qualified(t, settings.namespace) for t in stream_inputs(example())[name])
              for name in ("router", "status")}
    with Session(engine) as session, session.begin():
        token = create_token(session, "watcher", "viewer")
    outcomes_producer = Producer(producer_config(settings.kafka_bootstrap, 30, **{
        "transactional.id": f"{settings.namespace}-outcomes"}))
    outcomes_producer.init_transactions(30)
    with ProcessGroup(log_dir, process_env(settings)) as group:
        code, report = health_json(settings)
        assert code == 1 and "no live member" in stage(report, "router")["detail"], "never started: fails"
        assert "no relay" in stage(report, "relay")["detail"]
        for name, argv in (("relay", ["relay"]), ("router", ["streams"]),
                           ("status", ["streams", "--processor", "status"]), ("api", ["api"])):
            group.start(name, [*HERALD, *argv])
        wait_for_groups(settings.kafka_bootstrap, [router, counter], Deadline(90), group)
        write_registrations(engine, "REG-H", 20)
        start = datetime.now(UTC) - timedelta(minutes=1)
        produce_in_transaction(outcomes_producer, qualified(NOTIFICATION_STATUS, settings.namespace),
                               outcomes(30, start))
        wait_until(lambda: health_json(settings)[0] == 0, 60, "healthy, every group caught up")
        code, report = health_json(settings)
        assert report["consumer_lag"] == {router: 0, counter: 0}, "caught up is lag 0, markers included"
        assert kafka_tool(base_settings, settings.kafka_bootstrap, counter, inputs["status"]) == (0, 1)
        assert kafka_tool(base_settings, settings.kafka_bootstrap, router, inputs["router"]) == (0, 1)

        group.kill("router")
        write_registrations(engine, "REG-K", 10)  # waiting for a router that is gone
        wait_until(lambda: health_json(settings)[0] == 1, 60, "health to fail")
        # Both, not one: a killed member stays listed until its session (6 s) expires, which a
        # fresh clone's run once saw come after the lag had passed its 3 s limit.
        wait_until(lambda: all(word in stage(health_json(settings)[1], "router")["detail"]
                               for word in ("waited", "no live member")), 30, "time lag and no member")
        code, report = health_json(settings)
        tool_lag, tool_members = kafka_tool(base_settings, settings.kafka_bootstrap, router,
                                                inputs["router"])
        api = httpx.get(f"http://127.0.0.1:{settings.api_port}/v1/health",
                        headers={"Authorization": f"Bearer {token}"}, timeout=60)
        metrics = httpx.get(f"http://127.0.0.1:{settings.api_port}/metrics", timeout=60).text
        group.check_alive()
    router_check = stage(report, "router")
    assert router_check["state"] == "fail" and "no live member" in router_check["detail"]
    assert stage(report, "status")["state"] == stage(report, "relay")["state"] == "ok"
    assert report["consumer_members"][router] == tool_members == 0
    assert report["consumer_lag"][router] == tool_lag >= 10, "the same records behind as Kafka counts"
    assert report["consumer_lag_s"][router] > settings.health_max_lag_s
    assert api.status_code == 503 and api.json()["consumer_lag"][router] == tool_lag
    assert f'herald_consumer_lag{{group="{router}"}} {float(tool_lag)}' in metrics
    assert f'herald_consumer_members{{group="{router}"}} 0.0' in metrics
    assert 'herald_stage_up{stage="router"} 0.0' in metrics
    assert 'herald_stage_up{stage="status"} 1.0' in metrics
