"""The tasks example (seed 001) as `herald demo --example tasks` plays it, on this test's own
topics and database: assignments through the outbox, emailed over SMTP to a real SMTP server
that refuses some recipients (550) and is killed mid-stream and restarted, the operator
listing the refused ones by user and replaying one by id and the rest with --since/--limit;
every notification arrives once, counted at the server. (The demo also stops the broker
mid-run; here the shared broker stays up: other tests use it.)"""

from __future__ import annotations

import dataclasses

from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.services import Endpoints
from herald.proving.demo_tasks import REJECTED, _run
from herald.schemas.catalog import topic_catalog
from tests.support import provision


def test_every_assignment_is_notified_once_with_the_rejected_ones_replayed_by_the_operator(settings):
    configured = dataclasses.replace(settings, catalog=example_catalog_path("tasks"))
    provision(settings.kafka_bootstrap, settings.schema_registry_url,
              topic_catalog(open_catalog(configured.catalog, {}), settings.namespace))
    endpoints = Endpoints(settings.kafka_bootstrap, settings.database_url, settings.schema_registry_url)
    result = _run(configured, endpoints, 60, timeout_s=180, outage_s=0.0, rate=30.0, smtp_outage_s=1.0)
    assert result.smtp_outage_s == 1.0, "the SMTP server was killed and restarted mid-stream"
    assert result.delivered == {"email": 60}
    assert (result.lost, result.duplicates, result.writer_errors) == (0, 0, 0)
    # The 550s are dead-lettered at once. A notification whose three attempts all fell while the
    # SMTP server was down or starting again (5-6 s on a slow machine, against 3-6 s of backoff)
    # is dead-lettered too, as RetriesExhausted, and replayed with the rest.
    by_class = result.dead_lettered_by_class
    assert by_class["ProviderRejected"] == REJECTED
    assert set(by_class) <= {"ProviderRejected", "RetriesExhausted"}, by_class
    assert result.dead_lettered == sum(by_class.values())
    assert sum(result.listed_for_user.values()) == result.dead_lettered, "each listed under its user"
    assert result.replayed == {"one": 1, "rest": result.dead_lettered - 1}
