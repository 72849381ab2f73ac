"""`herald bench relay` runs end to end on a small load and reports every key the issue asks for."""

from __future__ import annotations

import json
import os
import subprocess

from herald.infra.settings import child_environ
from tests.support import HERALD


def test_bench_relay_reports_its_figures_and_baselines(settings):
    argv = [*HERALD, "bench", "relay", "--events", "3000", "--keys", "300", "--seconds", "1"]
    result = subprocess.run(argv, env=child_environ(settings, os.environ), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("drain_eps_1", "drain_eps_3", "sustained_eps", "raw_producer_eps", "raw_claim_eps",
                "p50_ms", "p99_ms", "p99_ms_with_warmup"):
        assert figures[key] > 0, key
    assert figures["order_kept"] is True
    assert figures["events"] == 3000


def test_bench_deliver_reports_its_figures_and_baseline(settings):
    argv = [*HERALD, "bench", "deliver", "--campaign", "300", "--rate", "100", "--seconds", "2",
            "--scale-records", "300"]
    result = subprocess.run(argv, env=child_environ(settings, os.environ), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("campaign_10k_s", "p50_ms", "p99_ms", "failover_s", "raw_provider_eps",
                "campaign_cpu_ms_per_msg"):
        assert figures[key] > 0, key
    assert set(figures["eps_by_workers"]) == {"1", "2", "4"}
    assert all(eps > 0 for eps in figures["eps_by_workers"].values())
    assert (figures["lost"], figures["duplicates"]) == (0, 0)
    assert figures["campaign"] == 300
