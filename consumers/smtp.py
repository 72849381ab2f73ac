"""The `email-smtp` channel kind: the notification's template, rendered, sent over SMTP.

Replies are classified by RFC 5321's classes: 2yz sent; 4yz (421 service closing, 450/451
try later, 452 storage) and a connection that fails or times out are retryable; 5yz is
fatal, with the server's reply (the recipient's address masked) in the dead letter. The
`Message-ID` is derived from the notification id, so a retry, resend or replay of one
notification carries the same id, and a mailbox or a downstream system recognises it.

Connections are kept open and reused, at most `connections` per worker; one that the server
closed (421, or gone while idle) is dropped and the next send opens another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib

from herald.consumers.providers import Outcome, ProviderResponse
from herald.infra import tracing
from herald.schemas.catalog_model import ChannelSpec
from herald.schemas.templates import Rendered, TemplateFailed, TemplateSet, template_context

_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
NOTIFICATION_HEADER = "X-Herald-Notification-Id"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str  # starttls, tls (implicit, "SMTPS") or none
    sender: str
    username: str | None
    password: str | None
    connections: int  # kept open per worker
    timeout_s: float

    @classmethod
    def of(cls, spec: ChannelSpec, timeout_s: float) -> SmtpConfig:
        """From a channel's connection settings (checked when the catalog was read)."""
        c: Mapping[str, Any] = spec.connection
        security = str(c.get("security", "starttls"))
        return cls(host=str(c["host"]), port=int(c.get("port") or _DEFAULT_PORTS[security]),
                   security=security, sender=str(c["from"]), username=c.get("username") or None,
                   password=c.get("password") or None,
                   connections=int(c.get("connections") or min(spec.concurrency, 8)), timeout_s=timeout_s)


def message_id(notification_id: str, sender: str) -> str:
    """The same for every attempt, resend and replay of one notification."""
    return f"<{notification_id}@{sender.rpartition('@')[2] or 'herald'}>"


def email_message(config: SmtpConfig, request: Mapping[str, Any], rendered: Rendered,
                  now: datetime | None = None) -> EmailMessage:
    """Multipart text + HTML (or whichever the template has); ValueError for an address that
    cannot be a header (a line break in it)."""
    if rendered.text is None and rendered.html is None:
        raise TemplateFailed(f"template {rendered.template} has neither a text nor an html block")
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = request["recipient"]
    message["Subject"] = rendered.subject or str(request["notification_type"]).replace("_", " ")
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id(request["notification_id"], config.sender)
    message[NOTIFICATION_HEADER] = request["notification_id"]
    if rendered.text is not None:
        message.set_content(rendered.text)
        if rendered.html is not None:
            message.add_alternative(rendered.html, subtype="html")
    else:
        message.set_content(rendered.html, subtype="html")
    return message


def reply_outcome(code: int, reply: str, recipient: str) -> ProviderResponse:
    """An SMTP reply that was not a success, by its class (RFC 5321 section 4.2.1)."""
    text = f"SMTP {code}: {reply.replace(recipient, '<recipient>')[:200]}"
    if 400 <= code < 500:
        error_class = "ProviderUnavailable" if code == 421 else "ProviderDeferred"
        return ProviderResponse(Outcome.RETRYABLE, error=text, error_class=error_class, status_code=code)
    return ProviderResponse(Outcome.FATAL, error=text, error_class="ProviderRejected", status_code=code)


class SmtpPool:
    """Open SMTP connections, reused; at most `config.connections` in use at once."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self._slots = asyncio.Semaphore(config.connections)
        self._idle: list[aiosmtplib.SMTP] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._slots:
            client = self._take_idle() or await self._open()
            try:
                yield client
            except aiosmtplib.SMTPRecipientsRefused as exc:  # aiosmtplib reset the envelope
                self._release(client, keep=all(r.code != 421 for r in exc.recipients))
                raise
            except aiosmtplib.SMTPResponseException as exc:
                # Reset too; but a 421 means the server is closing the connection.
                self._release(client, keep=exc.code != 421)
                raise
            except BaseException:
                self._release(client, keep=False)
                raise
            self._release(client, keep=True)

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        return None

    async def _open(self) -> aiosmtplib.SMTP:
        config = self._config
        client = aiosmtplib.SMTP(hostname=config.host, port=config.port, timeout=config.timeout_s,
                                 use_tls=config.security == "tls", start_tls=config.security == "starttls",
                                 username=config.username, password=config.password)
        await client.connect()
        return client

    def _release(self, client: aiosmtplib.SMTP, keep: bool) -> None:
        if keep and client.is_connected:
            self._idle.append(client)
        else:
            client.close()

    async def aclose(self) -> None:
        for client in self._idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
        self._idle.clear()


class SmtpProvider:
    """Renders each request's template and sends it over one pool of SMTP connections."""

    def __init__(self, config: SmtpConfig, templates: TemplateSet) -> None:
        self._config = config
        self._templates = templates
        self._pool = SmtpPool(config)

    async def send(self, request: dict[str, Any]) -> ProviderResponse:
        try:
            message = email_message(self._config, request,
                                    self._templates.render(request["template"], template_context(request)))
        except TemplateFailed as exc:
            return ProviderResponse(Outcome.FATAL, error=str(exc), error_class="TemplateFailed")
        except ValueError:  # the address cannot be a header (a line break in it)
            return ProviderResponse(Outcome.FATAL, error="the recipient is no email address",
                                    error_class="InvalidRecipient")
        if not tracing.enabled():
            return await self._send(message, request["recipient"])
        span = tracing.child_span("SMTP send", tracing.SpanKind.CLIENT,
                                  {"server.address": self._config.host, "server.port": self._config.port})
        try:
            response = await self._send(message, request["recipient"])
        except BaseException as exc:  # cancelled at shutdown
            if span is not None:
                tracing.end_span(span, type(exc).__name__)
            raise
        if span is not None:
            tracing.end_span(span, None if response.outcome is Outcome.SENT else response.error_class)
        return response

    async def _send(self, message: EmailMessage, recipient: str) -> ProviderResponse:
        try:
            async with self._pool.connection() as client:
                await client.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return reply_outcome(refused.code, refused.message, recipient)
        except aiosmtplib.SMTPResponseException as exc:
            return reply_outcome(exc.code, exc.message, recipient)
        except ValueError:  # aiosmtplib's address check
            return ProviderResponse(Outcome.FATAL, error="the recipient is no email address",
                                    error_class="InvalidRecipient")
        except (aiosmtplib.SMTPException, OSError) as exc:  # refused, reset, timed out, TLS
            timed_out = isinstance(exc, TimeoutError)
            return ProviderResponse(Outcome.RETRYABLE, error=f"{type(exc).__name__}: {exc}"[:200],
                                    error_class="ProviderTimeout" if timed_out else "ProviderUnreachable")
        return ProviderResponse(Outcome.SENT, message_id=str(message["Message-ID"]))

    async def aclose(self) -> None:
        await self._pool.aclose()
