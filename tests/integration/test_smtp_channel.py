"""The email-smtp channel kind against a real SMTP server (aiosmtpd, on loopback): what the
server received is what is counted, never a mock of the client."""

from __future__ import annotations

import asyncio
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP

from herald.consumers.providers import Outcome
from herald.consumers.smtp import SmtpConfig, SmtpProvider, message_id
from herald.infra.processes import free_port
from herald.proving.simulators.smtp_sink import MailStore, SinkFaults, SinkHandler
from herald.schemas.templates import TemplateSet

TEMPLATE = """{% block subject %}Task {{ task_id }} is yours,
 {{ name }}{% endblock %}
{% block text %}Hello {{ name }}, task {{ task_id }} ({{ title }}) was assigned to you.{% endblock %}
{% block html %}<p>Hello <b>{{ name }}</b>, task {{ task_id }} ({{ title }}) was assigned to you.</p>
{% endblock %}
"""


def request(n: int = 1, recipient: str = "ani@example.test", template: str = "task_assigned",
            **params: str) -> dict:
    return {"notification_id": f"n-{n}", "subject_id": f"T-{n}", "notification_type": "task_assigned",
            "channel": "email", "recipient": recipient, "template": template,
            "params": {"task_id": f"T-{n}", "name": "Ani", "title": "Fix <the> build", **params},
            "event_type": "task.assigned"}


class Server:
    """An aiosmtpd server in the test's loop, counting the connections it was given."""

    def __init__(self, tmp_path: Path) -> None:
        self.handler = SinkHandler(MailStore(tmp_path / "mail.sqlite"))
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            self.connections += 1
            return SMTP(self.handler, hostname="sink", loop=loop)

        self._server = await loop.create_server(protocol, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def config(self, connections: int = 2) -> SmtpConfig:
        return SmtpConfig(host="127.0.0.1", port=self.port, security="none", sender="herald@tasks.example",
                          username=None, password=None, connections=connections, timeout_s=5.0)


@pytest.fixture
def templates(tmp_path: Path) -> TemplateSet:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "task_assigned.j2").write_text(TEMPLATE)
    (folder / "task_assigned.id.j2").write_text(TEMPLATE.replace("Hello", "Halo"))
    (folder / "broken.j2").write_text("{% block text %}{{ missing_param }}{% endblock %}")
    return TemplateSet(folder)


def test_a_notification_arrives_as_multipart_text_and_html_with_its_own_message_id(tmp_path, templates):
    async def scenario() -> tuple:
        async with Server(tmp_path) as server:
            provider = SmtpProvider(server.config(), templates)
            sent = await provider.send(request())
            local = await provider.send(request(2, locale="id-ID"))
            await provider.aclose()
            return server, sent, local

    server, sent, local = asyncio.run(scenario())
    assert sent.outcome is Outcome.SENT and sent.message_id == "<n-1@tasks.example>"
    assert local.outcome is Outcome.SENT
    (first, second) = server.handler.store.messages()
    assert first["message_id"] == message_id("n-1", "herald@tasks.example")
    assert first["to"] == "ani@example.test"
    assert first["subject"] == "Task T-1 is yours, Ani", "the subject on one line"
    assert first["parts"] == ["text/html", "text/plain"] and first["notification_id"] == "n-1"
    assert second["subject"] == "Task T-2 is yours, Ani"


def test_the_html_part_is_escaped_and_the_text_part_is_not(tmp_path, templates):
    received: list[bytes] = []

    async def scenario() -> None:
        async with Server(tmp_path) as server:
            original = server.handler.handle_DATA

            async def keep(srv, session, envelope):
                received.append(envelope.original_content)
                return await original(srv, session, envelope)

            server.handler.handle_DATA = keep
            provider = SmtpProvider(server.config(), templates)
            assert (await provider.send(request(locale="id"))).outcome is Outcome.SENT
            await provider.aclose()

    asyncio.run(scenario())
    message = BytesParser(policy=policy.default).parsebytes(received[0])
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Halo Ani, task T-1 (Fix <the> build)" in text, "the locale's template, unescaped text"
    assert "Fix &lt;the&gt; build" in html and "<b>Ani</b>" in html


@pytest.mark.parametrize(("reply", "outcome", "error_class"), [
    (421, Outcome.RETRYABLE, "ProviderUnavailable"),
    (451, Outcome.RETRYABLE, "ProviderDeferred"),
    (550, Outcome.FATAL, "ProviderRejected"),
])
def test_replies_are_classified_by_their_rfc_5321_class(tmp_path, templates, reply, outcome, error_class):
    async def scenario() -> tuple:
        async with Server(tmp_path) as server:
            server.handler.faults = SinkFaults(reply=reply, fail_next=1)
            provider = SmtpProvider(server.config(connections=1), templates)
            refused = await provider.send(request(1))
            after = await provider.send(request(2))
            await provider.aclose()
            return server, refused, after

    server, refused, after = asyncio.run(scenario())
    assert (refused.outcome, refused.error_class, refused.status_code) == (outcome, error_class, reply)
    assert refused.error.startswith(f"SMTP {reply}: ") and "ani@example.test" not in refused.error
    assert after.outcome is Outcome.SENT, "the connection (or a new one after 421) goes on"
    assert server.handler.store.stats()["accepted"] == 1
    assert server.handler.store.stats()["refused"] == {str(reply): 1}
    assert server.connections == (2 if reply == 421 else 1), "421 closes the connection, others keep it"


def test_connections_are_reused_and_bounded(tmp_path, templates):
    async def scenario() -> tuple:
        async with Server(tmp_path) as server:
            provider = SmtpProvider(server.config(connections=3), templates)
            answers = await asyncio.gather(*(provider.send(request(n)) for n in range(60)))
            await provider.aclose()
            return server, answers

    server, answers = asyncio.run(scenario())
    assert all(a.outcome is Outcome.SENT for a in answers)
    assert server.handler.store.stats() | {"refused": None} == {
        "kind": "smtp", "accepted": 60, "repeats": 0, "duplicates": 0, "refused": None, "rejected": 0}
    assert server.connections == 3


def test_no_server_is_retryable_and_a_template_error_is_fatal(tmp_path, templates):
    config = SmtpConfig(host="127.0.0.1", port=free_port(), security="none", sender="herald@tasks.example",
                        username=None, password=None, connections=1, timeout_s=2.0)

    async def scenario() -> tuple:
        provider = SmtpProvider(config, templates)
        unreachable = await provider.send(request())
        broken = await provider.send(request(template="broken"))
        missing = await provider.send(request(template="nowhere"))
        await provider.aclose()
        return unreachable, broken, missing

    unreachable, broken, missing = asyncio.run(scenario())
    assert (unreachable.outcome, unreachable.error_class) == (Outcome.RETRYABLE, "ProviderUnreachable")
    assert (broken.outcome, broken.error_class) == (Outcome.FATAL, "TemplateFailed")
    assert "missing_param" in broken.error and "Ani" not in broken.error, "names the field, not a value"
    assert (missing.outcome, missing.error_class) == (Outcome.FATAL, "TemplateFailed")
