"""schemathesis against the published OpenAPI document: generated requests to every route, as
an operator, find no 5xx. One database, namespace and server for the module (each operation
is its own test, with its own generated examples)."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from contextlib import ExitStack

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy.orm import Session

from herald.infra.processes import free_port
from herald.infra.provisioning import delete_namespace_topics
from herald.ops.api_tokens import create_token
from herald.ops.ops_api import Wiring, create_ops_api
from herald.schemas.catalog import topic_catalog
from herald.schemas.migrations import scratch_database
from tests.catalogs import example
from tests.support import HERALD, process_env, provision, wait_until

DOCUMENT = create_ops_api(Wiring(None, example(), None, None)).openapi()  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def served(base_settings, endpoints):
    namespace = f"f{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(endpoints.database_url, namespace))
        provision(endpoints.kafka_bootstrap, endpoints.schema_registry_url,
                  topic_catalog(example(), namespace))
        stack.callback(delete_namespace_topics, endpoints.kafka_bootstrap, f"{namespace}.")
        engine = sa.create_engine(url)
        with Session(engine) as session, session.begin():
            token = create_token(session, "fuzzer", "operator")
        engine.dispose()
        # No stage runs here: health judges the API's own parts (a failing one is a documented 503).
        api_settings = dataclasses.replace(base_settings, kafka_bootstrap=endpoints.kafka_bootstrap,
                                           database_url=url, namespace=namespace, api_port=free_port(),
                                           health_stages=())
        server = subprocess.Popen([*HERALD, "api"], env=process_env(api_settings),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(server.wait, 30)
        stack.callback(server.terminate)
        base = f"http://127.0.0.1:{api_settings.api_port}"
        wait_until(lambda: _answers(f"{base}/up"), 60, "herald api to listen")
        yield base, token


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, served):
    base, token = served
    case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {token}"},
                           checks=[not_a_server_error])
