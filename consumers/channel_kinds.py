"""The channel kinds: how a catalog's channel becomes the `Provider` its workers send with.

Every kind implements one small interface (`Provider.send`: one request in, sent /
retryable / fatal with an error class and an optional retry-after out), so the delivery
worker, the retry tiers, the DLQ, the status stream and the metrics are one mechanism for
every kind. A kind is one function here: what it needs from the channel's settings, built.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from herald.consumers.channel_controls import ChannelGate, GatedProvider
from herald.consumers.delivery import Provider
from herald.consumers.endpoint_limits import EndpointLimit, EndpointLimiter, LimitedProvider
from herald.consumers.gateway import WHATSAPP_API, GatewayProvider
from herald.consumers.http_clients import delivery_client
from herald.consumers.providers import EMAIL_API, IDEMPOTENCY_KEY, HttpProvider
from herald.consumers.session_directory import SessionDirectory
from herald.consumers.smtp import SmtpConfig, SmtpProvider, email_message
from herald.consumers.webhook import WebhookConfig, WebhookProvider, signed_headers, webhook_body
from herald.schemas.catalog_model import CHANNEL_KINDS, ChannelSpec
from herald.schemas.catalog_refs import connection_list
from herald.schemas.templates import TemplateSet, template_context


@dataclass(frozen=True)
class ChannelContext:
    """What a kind may build its provider from."""

    name: str
    spec: ChannelSpec
    timeout_s: float  # of one provider call
    templates: TemplateSet
    sessions: SessionDirectory  # the gateway kind's; the others ignore it
    gate: ChannelGate | None = None  # operators' pauses and rates; None: never paused


def _whatsapp_gateway(channel: ChannelContext) -> Provider:
    instances = connection_list(channel.spec, "instances")
    # The work in flight plus room for the probes of a failover.
    client = delivery_client(channel.spec.concurrency + 2 * len(instances), channel.timeout_s)
    return GatewayProvider(instances, channel.sessions, client)


def _email_api(channel: ChannelContext) -> Provider:
    client = delivery_client(channel.spec.concurrency, channel.timeout_s, tls=True)
    return HttpProvider(connection_list(channel.spec, "url")[0], EMAIL_API, client)


def _email_smtp(channel: ChannelContext) -> Provider:
    return SmtpProvider(SmtpConfig.of(channel.spec, channel.timeout_s), channel.templates)


def _webhook(channel: ChannelContext) -> Provider:
    client = delivery_client(channel.spec.concurrency, channel.timeout_s, tls=True)
    return WebhookProvider(WebhookConfig.of(channel.spec), client)


PROVIDER_FACTORIES: dict[str, Callable[[ChannelContext], Provider]] = {
    "whatsapp-gateway": _whatsapp_gateway,
    "email": _email_api,
    "email-smtp": _email_smtp,
    "webhook": _webhook,
}
assert set(PROVIDER_FACTORIES) == set(CHANNEL_KINDS), "every declared kind has a provider"


def endpoint_limit(spec: ChannelSpec) -> EndpointLimit:
    limits = spec.per_endpoint
    in_flight = min(limits.in_flight or spec.concurrency, spec.concurrency)
    return EndpointLimit(in_flight, limits.rate, limits.wait)


def _endpoint_key(channel: ChannelContext, provider: Provider) -> tuple[Callable[[dict[str, Any]], str], str]:
    """What one endpoint of the kind is (a function of the request, asked of its provider), and
    how errors name it."""
    if isinstance(provider, WebhookProvider):  # the URL without its query: one merchant's endpoint
        return (lambda request: provider.endpoint_of(request).split("?")[0]), "the webhook endpoint"
    if isinstance(provider, GatewayProvider):
        return provider.endpoint_of, "the gateway instance"
    return (lambda _request: channel.name), f"channel {channel.name}'s server"


def provider_for(channel: ChannelContext) -> Provider:
    """The kind's provider, behind its per-endpoint limits when the channel sets any, and
    behind its gate (pauses and rates) when it has one."""
    provider = PROVIDER_FACTORIES[channel.spec.kind](channel)
    endpoint_of, label = _endpoint_key(channel, provider)
    limits = channel.spec.per_endpoint
    if limits.in_flight is not None or limits.rate is not None:
        limit = endpoint_limit(channel.spec)
        provider = LimitedProvider(provider, EndpointLimiter(limit), limit, endpoint_of, label)
    if channel.gate is not None:
        provider = GatedProvider(provider, channel.gate, endpoint_of, label)
    return provider


def preview(channel: ChannelContext, request: Mapping[str, Any]) -> str:
    """What the channel would send for this request, as it would go on the wire (a webhook's
    request, an email's MIME message); TemplateFailed when its template does not render."""
    spec = channel.spec
    if spec.kind == "email-smtp":
        rendered = channel.templates.render(request["template"], template_context(request))
        return email_message(SmtpConfig.of(spec, channel.timeout_s), request, rendered).as_string()
    if spec.kind == "webhook":
        config = WebhookConfig.of(spec)
        body = webhook_body(request)
        headers = signed_headers(config.keys, request, body, int(time.time()))
        return _http_preview(config.url or str(request["recipient"]), headers, body)
    if spec.kind == "whatsapp-gateway":
        url = f"{connection_list(spec, 'instances')[0]}/sessions/<the workspace's session>{WHATSAPP_API.path}"
        return _http_preview(url, {IDEMPOTENCY_KEY: request["notification_id"]},
                             orjson.dumps(WHATSAPP_API.body(dict(request))))
    url = connection_list(spec, "url")[0].rstrip("/") + EMAIL_API.path
    return _http_preview(url, {IDEMPOTENCY_KEY: request["notification_id"]},
                         orjson.dumps(EMAIL_API.body(dict(request))))


def _http_preview(url: str, headers: Mapping[str, str], body: bytes) -> str:
    lines = [f"POST {url}", *(f"{name}: {value}" for name, value in headers.items()),
             "Content-Type: application/json", "", body.decode()]
    return "\n".join(lines)
