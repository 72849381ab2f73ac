"""What `herald run` starts for a catalog, and how `--scale` is read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from herald.infra.catalogs import open_catalog
from herald.infra.settings import Settings
from herald.ops.launch import HERALD_ARGV
from herald.ops.pipeline import pipeline_stages
from herald.ops.run import parse_scale, plan_run, process_name

STAGES = ["relay", "router", "missing", "deliver:email", "deliver:whatsapp"]


def test_scale_reads_stage_equals_count() -> None:
    assert parse_scale(["deliver:email=3", "router=2"], STAGES) == {"deliver:email": 3, "router": 2}
    assert parse_scale([], STAGES) == {}


@pytest.mark.parametrize("value", ["deliver:email", "deliver:email=0", "deliver:email=x", "=2"])
def test_a_malformed_scale_is_refused_with_the_expected_form(value: str) -> None:
    with pytest.raises(ValueError, match="expected STAGE=N"):
        parse_scale([value], STAGES)


def test_an_unknown_stage_is_refused_naming_the_stages() -> None:
    with pytest.raises(ValueError, match=r"no stage 'deliver:sms'; stages: relay, router"):
        parse_scale(["deliver:sms=2"], STAGES)


def test_process_names_are_file_names_and_numbered_only_when_scaled() -> None:
    assert process_name("deliver:email", 1, 1) == "deliver-email"
    assert [process_name("deliver:email", n, 3) for n in (1, 2, 3)] == [
        "deliver-email-1", "deliver-email-2", "deliver-email-3"]


def test_the_plan_runs_each_stage_of_the_catalog_the_api_and_the_ingest_when_it_can(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    catalog = open_catalog(None, {})
    stages = pipeline_stages(catalog, settings.namespace, settings.streams_app_id)
    plan = plan_run(settings, catalog, {"deliver:email": 2})
    names = [spec.name for spec in plan.specs]
    expected = [process_name(stage.name, 1, 1) for stage in stages if stage.name != "deliver:email"]
    assert set(names) == {*expected, "deliver-email-1", "deliver-email-2", "api"}
    assert len(names) == len(set(names))
    by_name = {spec.name: spec for spec in plan.specs}
    assert by_name["router"].argv == (*HERALD_ARGV, "streams", "--processor", "router")
    assert by_name["deliver-email-2"].argv == (*HERALD_ARGV, "deliver", "--channel", "email")
    assert by_name["deliver-email-2"].stage == "deliver:email"
    instance_ids = [spec.env["HERALD_INSTANCE_ID"] for spec in plan.specs if spec.env]
    assert len(instance_ids) == len(set(instance_ids)) == len(stages) + 1
    assert plan.skipped == ("ingest: HERALD_INGEST_SECRETS is not set (it never accepts unsigned events)",)
    with_secrets = plan_run(dataclasses.replace(settings, ingest_secrets="s3cret"), catalog, {})
    assert with_secrets.skipped == ()
    assert with_secrets.specs[-1].argv == (*HERALD_ARGV, "ingest")
