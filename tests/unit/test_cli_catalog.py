"""`herald catalog check` exits 1 naming the entry and field; `show` prints the routes."""


import pytest
import yaml
from typer.testing import CliRunner

from herald.infra.catalogs import example_catalog_path
from herald.ops.cli import app


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "240"})


def test_check_exits_1_naming_the_file_entry_and_field(logging_kept, tmp_path):
    example = example_catalog_path("tasks")
    catalog = yaml.safe_load(example.read_text())
    catalog["events"]["task"]["schema"] = str(example.parent / "schemas/task_event.avsc")
    catalog["notifications"]["task_assigned"]["channels"]["email"]["to"] = "user_mail"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(catalog))
    result = run("catalog", "check", str(path))
    assert result.exit_code == 1
    assert (f"{path}: notifications.task_assigned.channels.email.to: 'user_mail' is no field of the "
            "event's schema") in result.output


@pytest.mark.parametrize("example", ["registrations", "tasks", "payments"])
def test_check_passes_the_examples(logging_kept, example, monkeypatch):
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRETS", "whsec_c2VjcmV0LW9mLWF0LWxlYXN0LTE2LWJ5dGVz")
    result = run("catalog", "check", str(example_catalog_path(example)))
    assert result.exit_code == 0, result.output
    assert ": ok (1 event kind(s)" in result.output


def test_show_prints_each_event_types_notifications_and_channels(logging_kept):
    result = run("catalog", "show")  # no file, no HERALD_CATALOG: the registrations example
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "registration.payment_verified" in line)
    assert "e_ticket" in row and "whatsapp -> phone, email -> email" in row and "5m" in row
    assert any("decorrelated" in line or "full jitter" in line for line in result.output.splitlines())
