"""`herald bench baselines`: the physical limits Herald's figures are held against, measured on
the same broker and database in the same run.

  producer_perf_*  Kafka's own ProducerPerformance (the kafka-tools jar the embedded broker
                   runs from) on a fresh topic, with the relay's producer settings (acks=all,
                   idempotence, lz4, linger 5 ms) and records the size of a registration event
  pgbench_*        pgbench inserting outbox rows (the real table, in a scratch database) with
                   as many clients and rows per transaction as the relay bench's writers, but
                   no SQLAlchemy, no relay and no domain row
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from herald.infra.processes import ServiceError
from herald.infra.provisioning import delete_namespace_topics
from herald.infra.services import embedded_kafka
from herald.infra.settings import Settings
from herald.infra.system_packages import find_postgres_bin_dir, require_command
from herald.proving.bench_relay import create_topic
from herald.schemas.catalog import qualified
from herald.schemas.codec import encode
from herald.schemas.migrations import scratch_database

PRODUCER_PERFORMANCE = "org.apache.kafka.tools.ProducerPerformance"
# The relay's producer (infra/kafka_io.producer_config), in Java client terms.
PRODUCER_PROPS = ("acks=all", "enable.idempotence=true", "linger.ms=5", "compression.type=lz4")
# "100000 records sent, 51813.5 records/sec (5.93 MB/sec), 272.26 ms avg latency, 456.00 ms max
# latency, 276 ms 50th, 440 ms 95th, 452 ms 99th, 455 ms 99.9th."
PERF_SUMMARY = re.compile(r"records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), "
                          r"([\d.]+) ms avg latency.*?(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")
PGBENCH_TPS = re.compile(r"^tps = ([\d.]+)", re.MULTILINE)


def registration_event_size() -> int:
    """Bytes of one encoded registration event: the record size both baselines use."""
    return len(encode("herald.RegistrationEvent", {
        "event_id": str(uuid.uuid4()), "registration_id": "BENCH-000001", "status": "payment_verified",
        "participant_name": "Participant 1", "phone": "+6281234567890",
        "email": "participant@example.test", "occurred_at": datetime.now(UTC)}))


def producer_performance(settings: Settings, bootstrap: str, records: int,
                         record_size: int) -> dict[str, float]:
    """Kafka's ProducerPerformance, all out (--throughput -1), on a topic of its own."""
    namespace = f"perf{uuid.uuid4().hex[:8]}"
    topic = qualified("bench.producer-perf", namespace)
    create_topic(bootstrap, topic, log_append_time=False)  # shaped as the relay bench's topics
    argv = [require_command("java"), "-Xmx512m", "-cp",
            embedded_kafka(settings).classpath(), PRODUCER_PERFORMANCE, "--topic", topic,
            "--num-records", str(records), "--record-size", str(record_size), "--throughput", "-1",
            "--producer-props", f"bootstrap.servers={bootstrap}", *PRODUCER_PROPS]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    finally:
        delete_namespace_topics(bootstrap, namespace)
    found = PERF_SUMMARY.search(result.stdout)
    if result.returncode or found is None:
        raise ServiceError(f"ProducerPerformance failed (exit {result.returncode}): "
                           f"{(result.stdout + result.stderr)[-2000:]}")
    eps, mb_s, avg_ms, p50, p95, p99 = (float(g) for g in found.groups())
    return {"producer_perf_eps": eps, "producer_perf_mb_s": mb_s, "producer_perf_avg_ms": avg_ms,
            "producer_perf_p50_ms": p50, "producer_perf_p95_ms": p95, "producer_perf_p99_ms": p99}


def pgbench_script(rows_per_tx: int, payload_size: int) -> str:
    """One statement, so one transaction, of `rows_per_tx` outbox rows shaped like the relay's."""
    return ("INSERT INTO outbox (shard, topic, message_key, event_id, event_type, payload, headers)\n"
            f"SELECT (random() * 31)::int, 'bench.pgbench', 'BENCH-' || (random() * 20000)::int,\n"
            f"       gen_random_uuid(), 'registration.payment_verified',\n"
            f"       convert_to(repeat('x', {payload_size}), 'UTF8'),\n"
            "       '{\"event_type\": \"registration.payment_verified\"}'::jsonb\n"
            f"FROM generate_series(1, {rows_per_tx});\n")


def pgbench_inserts(server_url: str, seconds: float, clients: int, rows_per_tx: int,
                    payload_size: int) -> dict[str, float]:
    """pgbench's rows/s into the outbox of a scratch database."""
    with scratch_database(server_url, f"pgbench{uuid.uuid4().hex[:8]}") as url, \
            tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(pgbench_script(rows_per_tx, payload_size))
        script.flush()
        result = subprocess.run(_pgbench_argv(url, seconds, clients, script.name), capture_output=True,
                                text=True, timeout=seconds + 120, env=_pg_environ(url))
    found = PGBENCH_TPS.search(result.stdout)
    if result.returncode or found is None:
        raise ServiceError(f"pgbench failed (exit {result.returncode}): "
                           f"{(result.stdout + result.stderr)[-2000:]}")
    tps = float(found.group(1))
    return {"pgbench_clients": clients, "pgbench_rows_per_tx": rows_per_tx, "pgbench_tps": tps,
            "pgbench_rows_per_s": tps * rows_per_tx}


def _pgbench_argv(url: str, seconds: float, clients: int, script: str) -> list[str]:
    parts = sa.make_url(url)
    return [_pgbench(), "-n", "-h", parts.host or "127.0.0.1",
            "-p", str(parts.port or 5432), "-U", parts.username or "postgres", "-c", str(clients),
            "-j", str(min(clients, 2)), "-T", str(max(1, round(seconds))), "-f", script, parts.database or ""]


def _pgbench() -> str:
    """The pgbench beside the embedded server's binaries (Debian ships it with the client)."""
    bin_dir = find_postgres_bin_dir()
    if bin_dir is not None and (bin_dir / "pgbench").exists():
        return str(bin_dir / "pgbench")
    return require_command("pgbench")


def _pg_environ(url: str) -> dict[str, str]:
    password = sa.make_url(url).password
    return {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}


def run_baselines(settings: Settings, bootstrap: str, server_url: str, records: int, seconds: float,
                  clients: int = 4, rows_per_tx: int = 50) -> dict[str, Any]:
    size = registration_event_size()
    return {"record_size": size, **producer_performance(settings, bootstrap, records, size),
            **pgbench_inserts(server_url, seconds, clients, rows_per_tx, size)}


def print_baselines(results: dict[str, Any]) -> None:
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}), flush=True)

