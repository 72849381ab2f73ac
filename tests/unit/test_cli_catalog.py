"""`herald catalog check` exits 1 naming the entry and field; `show` prints the routes;
`preview` prints what each channel would send."""

import email
import email.policy
import json

import pytest
import yaml
from standardwebhooks import Webhook
from typer.testing import CliRunner

from herald.infra.catalogs import example_catalog_path
from herald.ops import cli_catalog
from herald.ops.cli import app
from herald.proving.catalogs import write_catalog
from herald.schemas.ids import notification_id


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


def test_show_prints_each_event_types_notifications_and_channels(logging_kept, monkeypatch):
    # Wide enough that no cell wraps, whatever terminal (or none) the suite runs in.
    monkeypatch.setattr(cli_catalog.out, "width", 200)
    result = run("catalog", "show")  # no file, no HERALD_CATALOG: the registrations example
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "registration.payment_verified" in line)
    assert "e_ticket" in row and "whatsapp -> phone, email -> email" in row and "5m" in row
    assert any("decorrelated" in line or "full jitter" in line for line in result.output.splitlines())


SECRET = "whsec_c2VjcmV0LW9mLWF0LWxlYXN0LTE2LWJ5dGVz"
TASK = {"type": "task.assigned", "data": {
    "task_id": "T-1", "task_title": "Fix <the> build", "user_id": "U1", "user_email": "ani@example.test",
    "role_name": "reviewer", "action": "assigned", "occurred_at": "2026-12-02T07:00:00Z"}}


def event_file(tmp_path, event) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return str(path)


def test_preview_prints_the_email_as_sent_text_and_escaped_html(logging_kept, tmp_path):
    result = run("catalog", "preview", "task_assigned", "--event", event_file(tmp_path, TASK),
                 "--catalog", str(example_catalog_path("tasks")))
    assert result.exit_code == 0, result.output
    message = email.message_from_string(result.output.split("\n", 1)[1], policy=email.policy.default)
    assert message["Subject"] == "Task T-1 assigned to you as reviewer"
    assert message["Message-ID"] == f"<{notification_id('T-1', 'task_assigned', 'email')}@herald.example>"
    assert 'Task T-1, "Fix <the> build"' in message.get_body(("plain",)).get_content()
    assert "Fix &lt;the&gt; build" in message.get_body(("html",)).get_content()


def test_preview_prints_a_webhook_whose_signature_the_reference_library_verifies(logging_kept, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRETS", SECRET)
    payment = {"type": "payment.failed", "data": {
        "payment_id": "PAY-1", "merchant_id": "M-1", "webhook_url": "https://shop.example/hooks",
        "amount": 150000, "currency": "IDR", "status": "failed", "failure_reason": "insufficient_funds",
        "occurred_at": "2026-12-02T07:00:00Z"}}
    result = run("catalog", "preview", "payment_result", "--event", event_file(tmp_path, payment),
                 "--catalog", str(example_catalog_path("payments")))
    assert result.exit_code == 0, result.output
    request_line, rest = result.output.split("\n", 2)[1:]
    head, body = rest.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    assert request_line == "POST https://shop.example/hooks"
    event = Webhook(SECRET).verify(body.strip(), headers)
    assert event["type"] == "payment.failed" and event["data"]["failure_reason"] == "insufficient_funds"


def test_preview_names_what_is_wrong(logging_kept, tmp_path):
    tasks = str(example_catalog_path("tasks"))
    unknown = run("catalog", "preview", "nothing", "--event", event_file(tmp_path, TASK), "--catalog", tasks)
    assert unknown.exit_code == 1 and "no notification 'nothing'" in unknown.output
    bad = {**TASK, "data": {**TASK["data"], "user_email": "not an address"}}
    invalid = run("catalog", "preview", "task_assigned", "--event", event_file(tmp_path, bad),
                  "--catalog", tasks)
    assert invalid.exit_code == 1 and "data.user_email" in invalid.output
    assert "not an address" not in invalid.output, "no value echoed"


def test_preview_fails_on_a_template_that_does_not_render(logging_kept, tmp_path):
    path = write_catalog(tmp_path / "tasks.yaml", "tasks", lambda d: d.update(templates="broken"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "task_assigned.j2").write_text("{% block text %}{{ assignee }}{% endblock %}")
    result = run("catalog", "preview", "task_assigned", "--event", event_file(tmp_path, TASK),
                 "--catalog", str(path))
    assert result.exit_code == 1
    assert ("channel email: template task_assigned.j2: UndefinedError: 'assignee' is undefined"
            in result.output)
