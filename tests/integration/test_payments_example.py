"""The payments example (seed 003) as `herald demo --example payments` plays it, on this test's
own topics and database: signed webhooks to five merchants, verified by the receivers with
Standard Webhooks' reference library; a 503 stretch retried never before its due time, a 410
endpoint dead-lettered at once, a rotated secret refused nowhere."""

from __future__ import annotations

import dataclasses

from herald.infra.catalogs import example_catalog_path, open_catalog
from herald.infra.services import Endpoints
from herald.proving.demo_payments import FLAKY_FAILURES, SECRETS_VARIABLE, _run, new_secret
from herald.schemas.catalog import topic_catalog
from tests.support import provision


def test_every_payment_webhook_arrives_once_signed_and_the_gone_endpoint_is_dead_lettered(settings):
    keys = (new_secret(), new_secret())
    configured = dataclasses.replace(settings, catalog=example_catalog_path("payments"))
    catalog = open_catalog(configured.catalog, {SECRETS_VARIABLE: ",".join(keys)})
    provision(settings.kafka_bootstrap, settings.schema_registry_url,
              topic_catalog(catalog, settings.namespace))
    endpoints = Endpoints(settings.kafka_bootstrap, settings.database_url, settings.schema_registry_url)
    result = _run(configured, endpoints, 100, timeout_s=180, rate=50.0, keys=keys)
    assert result.delivered == {"steady-1": 20, "steady-2": 20, "rotated": 20, "flaky": 20}
    assert (result.lost, result.duplicates, result.writer_errors, result.bad_signatures) == (0, 0, 0, 0)
    assert result.dead_lettered_gone == 20, "each of the gone merchant's, at its first attempt"
    assert result.retried == FLAKY_FAILURES and result.retries_checked >= FLAKY_FAILURES
    assert result.early_retries == 0
