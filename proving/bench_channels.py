"""`herald bench deliver --channel email-smtp|webhook`: a channel kind's delivery rate beside
its raw client's, measured in one run against the same server.

- baseline: the raw client straight at the receiver, no Kafka, no Herald: aiosmtplib over as
  many reused connections as the channel keeps (`connections`), or httpx with as many
  requests in flight as the channel's `concurrency`, each signed with the `standardwebhooks`
  library, to eight merchant endpoints in turn;
- Herald: one `herald deliver` process (request topic and retry tiers) of the example's channel
  (tasks' email over SMTP, payments' merchant webhooks), its backlog produced at once, from
  the first produce to the receiver accepting the last;
- their ratio, and what was lost or doubled, counted at the receiver. For webhooks also the
  rate of Herald's own HTTP transport with no Kafka: httpx's pool is the slower client, so the
  ratio to it alone would flatter Herald.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiosmtplib
import httpx
from confluent_kafka import Producer
from standardwebhooks import Webhook

from herald.consumers.http_clients import ProviderClient, delivery_client
from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.deadline import Deadline
from herald.infra.kafka_io import producer_config
from herald.infra.processes import ProcessGroup
from herald.infra.provisioning import delete_namespace_topics, provision_topics
from herald.infra.schema_registry import delete_subjects, register_and_connect, registry_client
from herald.infra.services import resolve_registry_url
from herald.infra.settings import Settings, child_environ
from herald.ops.launch import HERALD_ARGV
from herald.proving.demo import wait_for_groups
from herald.proving.demo_payments import SECRETS_VARIABLE, new_secret
from herald.proving.simulators.receivers import ReceiverProcess
from herald.schemas.catalog import consumer_group, notification_topic, qualified, topic_catalog
from herald.schemas.catalog_model import Catalog
from herald.schemas.codec import encode
from herald.schemas.ids import notification_id


@dataclasses.dataclass(frozen=True)
class KindBench:
    kind: str
    example: str  # the example catalog whose channel of this kind runs
    channel: str
    receiver: str  # the simulator kind

    def request(self, n: int, prefix: str, endpoints: tuple[str, ...]) -> dict[str, Any]:
        subject = f"{prefix}-{n:06d}"
        common = {"subject_id": subject, "source_event_id": str(uuid.uuid4()), "channel": self.channel,
                  "source_occurred_at": datetime.now(UTC), "workspace_id": "default"}
        if self.kind == "email-smtp":
            return {**common, "notification_id": notification_id(subject, "task_assigned", self.channel),
                    "notification_type": "task_assigned", "recipient": f"u{n}@tasks.example",
                    "template": "task_assigned", "event_type": "task.assigned",
                    "params": {"task_id": subject, "task_title": f"Task {n}", "role_name": "reviewer",
                               "user_id": f"u{n}"}}
        return {**common, "notification_id": notification_id(subject, "payment_result", self.channel),
                "notification_type": "payment_result", "recipient": endpoints[n % len(endpoints)],
                "template": "payment_result",
                "event_type": "payment.succeeded",
                "params": {"payment_id": subject, "merchant_id": "m-bench", "amount": "150000",
                           "currency": "IDR", "status": "succeeded", "failure_reason": ""}}


MERCHANTS = 8  # webhook: endpoints taking turns, as a payment service's merchants would
KINDS = {"email-smtp": KindBench("email-smtp", "tasks", "email", "smtp"),
         "webhook": KindBench("webhook", "payments", "merchants", "webhook")}


@dataclasses.dataclass
class ChannelRun:
    bench: KindBench
    settings: Settings  # of this run's namespace and the example's catalog
    catalog: Catalog
    receiver: ReceiverProcess
    group: ProcessGroup
    secret: str
    endpoints: tuple[str, ...] = ()  # webhook: the merchant endpoints both sides post to, in turn

    @property
    def extra_environ(self) -> dict[str, str]:
        return {**self.receiver.environ(), SECRETS_VARIABLE: self.secret}


def raw_smtp_eps(receiver: ReceiverProcess, count: int, connections: int) -> float:
    """aiosmtplib straight at the sink: `connections` reused connections, no Herald."""
    async def one_connection(messages: list[EmailMessage]) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=receiver.smtp_port, start_tls=False) as smtp:
            for message in messages:
                await smtp.send_message(message)

    def message(n: int) -> EmailMessage:
        mail = EmailMessage()
        mail["From"], mail["To"] = "tasks@herald.example", f"raw{n}@tasks.example"
        mail["Subject"], mail["Message-ID"] = f"Raw {n}", make_msgid(domain="raw.bench")
        mail.set_content(f"Task RAW-{n} is assigned to you.")
        mail.add_alternative(f"<p>Task <strong>RAW-{n}</strong> is assigned to you.</p>", subtype="html")
        return mail

    async def run() -> float:
        messages = [message(n) for n in range(count)]
        started = time.perf_counter()
        await asyncio.gather(*(one_connection(messages[i::connections]) for i in range(connections)))
        return count / (time.perf_counter() - started)
    return asyncio.run(run())


def raw_webhook_eps(endpoints: tuple[str, ...], secret: str, count: int, concurrency: int,
                    client: ProviderClient | None = None) -> float:
    """Straight at the receiver, each body signed by the reference library, no Kafka, no
    Herald: httpx's own client, or (`client`) the transport Herald's workers use."""
    signer = Webhook(secret)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def post(http: httpx.AsyncClient | ProviderClient, url: str, body: bytes,
                   headers: dict[str, str]) -> httpx.Response:
        if isinstance(http, ProviderClient):
            return await http.post(url, body, headers)
        return await http.post(url, content=body, headers=headers)

    async def run() -> float:
        http = client or httpx.AsyncClient(limits=limits, timeout=30)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            msg_id, now = f"raw-{uuid.uuid4().hex}", datetime.now(UTC)
            body = json.dumps({"type": "payment.succeeded", "timestamp": now.isoformat(),
                               "data": {"payment_id": f"RAW-{n}", "amount": "150000"}})
            headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": signer.sign(msg_id, now, body),
                       "content-type": "application/json"}
            async with semaphore:
                (await post(http, endpoints[n % len(endpoints)], body.encode(), headers)).raise_for_status()
        try:
            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(count)))
            return count / (time.perf_counter() - started)
        finally:
            await http.aclose()
    return asyncio.run(run())


def raw_eps(run: ChannelRun, count: int) -> dict[str, float]:
    """The raw client's rate; for webhooks also that of Herald's own HTTP transport, no Kafka."""
    spec = run.catalog.channels[run.bench.channel]
    if run.bench.kind == "email-smtp":
        connections = int(spec.connection.get("connections") or min(spec.concurrency, 8))
        return {"raw_client_eps": raw_smtp_eps(run.receiver, count, connections)}
    own = delivery_client(spec.concurrency, 30, tls=True)  # what the webhook kind builds
    return {"raw_client_eps": raw_webhook_eps(run.endpoints, run.secret, count, spec.concurrency),
            "raw_transport_eps": raw_webhook_eps(run.endpoints, run.secret, count, spec.concurrency, own)}


def herald_eps(run: ChannelRun, count: int) -> tuple[float, set[str]]:
    """One delivery process, its backlog of `count` produced at once: its rate, and the ids."""
    run.group.env = {**child_environ(run.settings, os.environ), **run.extra_environ}
    # Every tier too: what the per-endpoint limits defer is delivered from there.
    run.group.start("deliver", [*HERALD_ARGV, "deliver", "--channel", run.bench.channel])
    group_id = consumer_group("deliver", notification_topic(run.bench.channel), run.settings.namespace)
    wait_for_groups(run.settings.kafka_bootstrap or "", [group_id], Deadline(90), run.group)
    prefix = f"BENCH-{uuid.uuid4().hex[:6]}"
    requests = [run.bench.request(n, prefix, run.endpoints) for n in range(count)]
    before = run.receiver.accepted()
    started = time.time()
    _produce(run, requests)
    deadline = Deadline(300)  # what has not arrived by then is counted lost
    while run.receiver.accepted() < before + count and not deadline.expired():
        run.group.check_alive()
        time.sleep(0.05)
    last = max((m["accepted_at_ms"] / 1000 for m in run.receiver.messages()), default=started)
    run.group.stop("deliver")
    return count / (last - started), {r["notification_id"] for r in requests}


def _produce(run: ChannelRun, requests: list[dict[str, Any]]) -> None:
    producer = Producer(producer_config(run.settings.kafka_bootstrap or "", 60))
    topic = qualified(notification_topic(run.bench.channel), run.settings.namespace)
    for request in requests:
        producer.produce(topic, key=request["notification_id"].encode(),
                         value=encode("herald.NotificationRequest", request))
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("bench: requests not acknowledged")


def lost_and_doubled(run: ChannelRun, ids: set[str]) -> dict[str, int]:
    """Counted at the receiver: each notification's deliveries, by its id."""
    field = "notification_id" if run.bench.kind == "email-smtp" else "webhook_id"
    copies: dict[str, int] = {}
    for message in run.receiver.messages():
        if message[field] in ids:
            copies[message[field]] = copies.get(message[field], 0) + int(message["receptions"])
    return {"lost": len(ids - set(copies)), "duplicates": sum(n - 1 for n in copies.values())}


@contextmanager
def channel_run(settings: Settings, bootstrap: str, kind: str, latency_ms: float) -> Iterator[ChannelRun]:
    bench, run_id, secret = KINDS[kind], f"benchc{uuid.uuid4().hex[:6]}", new_secret()
    log_dir = settings.home / "logs" / run_id
    receiver = ReceiverProcess.plan(bench.receiver, log_dir / "receiver")
    path = example_catalog_path(bench.example)
    catalog = open_catalog(path, {**os.environ, **receiver.environ(), SECRETS_VARIABLE: secret})
    specs = topic_catalog(catalog, run_id)
    provision_topics(bootstrap, specs)
    register_and_connect(resolve_registry_url(settings), specs)
    configured = dataclasses.replace(settings, kafka_bootstrap=bootstrap, namespace=run_id, catalog=path)
    try:
        with ProcessGroup(log_dir, dict(os.environ)) as group:
            receiver.start(group)
            run = ChannelRun(bench, configured, catalog, receiver, group, secret)
            if kind == "webhook":
                run.endpoints = tuple(receiver.endpoint(f"merchant-{n}", secret=secret, latency_ms=latency_ms)
                                      for n in range(MERCHANTS))
            else:
                receiver.faults(latency_ms=latency_ms)
            yield run
    finally:
        delete_namespace_topics(bootstrap, run_id)
        delete_subjects(registry_client(resolve_registry_url(settings)), specs)


def run_bench_channel(settings: Settings, bootstrap: str, kind: str, count: int,
                      latency_ms: float) -> dict[str, Any]:
    with channel_run(settings, bootstrap, kind, latency_ms) as run:
        raw = raw_eps(run, count)
        herald, ids = herald_eps(run, count)
        counted = lost_and_doubled(run, ids)
    ratios = {"ratio": round(herald / raw["raw_client_eps"], 3)}
    if "raw_transport_eps" in raw:
        ratios["ratio_to_transport"] = round(herald / raw["raw_transport_eps"], 3)
    return {"channel": kind, "messages": count, "latency_ms": latency_ms,
            **{k: round(v, 1) for k, v in raw.items()}, "herald_eps": round(herald, 1), **ratios, **counted}


def print_bench_channel(result: dict[str, Any]) -> None:
    client = "aiosmtplib" if result["channel"] == "email-smtp" else "httpx"
    print(f"herald bench deliver --channel {result['channel']} ({result['messages']:,} messages, "
          f"the server answering after {result['latency_ms']:g} ms)")
    print(f"  raw client ({client}, no Kafka): {result['raw_client_eps']:,.0f} msg/s")
    if "raw_transport_eps" in result:
        print(f"  Herald's HTTP transport, no Kafka: {result['raw_transport_eps']:,.0f} msg/s")
    to_transport = (f", {result['ratio_to_transport']:.2f} of the transport's"
                    if "ratio_to_transport" in result else "")
    print(f"  Herald, one delivery process:   {result['herald_eps']:,.0f} msg/s  "
          f"(ratio {result['ratio']:.2f} of the raw client's{to_transport})")
    print(f"  lost / duplicates at the server: {result['lost']} / {result['duplicates']}")
    print(json.dumps(result), flush=True)
