"""`herald chaos` end to end, short: PostgreSQL restarted under load and the email provider down
for a few seconds, on an embedded stack of the test's own (a restart of the shared database
would break the other tests' connections). Counted at the simulators, as `make chaos` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from tests.support import HERALD


@pytest.mark.timeout(900)
def test_herald_chaos_loses_and_doubles_nothing_through_a_postgres_restart_and_a_provider_outage(
        base_settings):
    if base_settings.kafka_bootstrap or base_settings.database_url:
        pytest.skip("herald chaos stops embedded services: HERALD_KAFKA_BOOTSTRAP/DATABASE_URL are set")
    home = base_settings.home / f"test-chaos-{uuid.uuid4().hex[:8]}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    environ |= {"HERALD_HOME": str(home),
                "HERALD_MAVEN_REPO": str(base_settings.maven_repo or base_settings.home / "m2")}
    argv = [*HERALD, "chaos", "--scenario", "postgres-restart", "--scenario", "provider-down",
            "--rate", "20", "--warmup-s", "5", "--outage-s", "10", "--cooldown-s", "5"]
    try:
        result = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=840)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    outcomes = {line["scenario"]: line for line in map(json.loads, _json_lines(result.stdout))}
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert set(outcomes) == {"postgres-restart", "provider-down"}, result.stdout
    for name, outcome in outcomes.items():
        assert outcome["written"] > 0 and outcome["delivered"] == outcome["written"], outcome
        assert (outcome["lost"], outcome["duplicated"]) == (0, 0), outcome
        assert outcome["recovery_s"] is not None, f"{name} never drained its backlog: {outcome}"
    assert outcomes["postgres-restart"]["writer_retries"] > 0, "the writers never saw the restart"
    assert "Herald chaos" in result.stdout, "the table of verdicts was not printed"


def _json_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("{")]
