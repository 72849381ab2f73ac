"""The channel bench's requests are ones its example's channel accepts: valid records, and for
SMTP a rendering template."""

from herald.infra.catalogs import example_catalog_path
from herald.proving.bench_channels import KINDS
from herald.schemas.codec import decode, encode
from herald.schemas.templates import TemplateSet, template_context

ENDPOINTS = ("http://127.0.0.1:1/hooks/merchant-0", "http://127.0.0.1:1/hooks/merchant-1")


def test_each_kinds_requests_are_valid_notification_requests():
    for bench in KINDS.values():
        requests = [bench.request(n, "P", ENDPOINTS) for n in range(4)]
        assert len({r["notification_id"] for r in requests}) == 4
        assert all(decode(encode("herald.NotificationRequest", r)).record["channel"] == bench.channel
                   for r in requests)


def test_webhook_requests_take_the_merchant_endpoints_in_turn():
    recipients = [KINDS["webhook"].request(n, "P", ENDPOINTS)["recipient"] for n in range(4)]
    assert recipients == [*ENDPOINTS, *ENDPOINTS]


def test_the_smtp_request_renders_with_the_tasks_example_template():
    request = KINDS["email-smtp"].request(7, "P", ())
    templates = TemplateSet(example_catalog_path("tasks").parent / "templates")
    rendered = templates.render(request["template"], template_context(request))
    assert "P-000007" in rendered.subject and "P-000007" in rendered.text
