"""Ops API routes to pause and resume a channel (or one endpoint of it), and to read the
channels' states and the audit log of changes (channels.control)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from herald.infra.kafka_views import KafkaUnavailable
from herald.ops.channel_control import (
    MAX_REASON,
    ChangeRequest,
    ChannelControlError,
    audit_rows,
    channel_states,
    control_history,
    publish_change,
)
from herald.ops.ops_api import OPERATOR_ERRORS, ApiError, Operator, Viewer, Wired, Wiring, api_error

channel_routes = APIRouter(prefix="/v1/channels", tags=["channels"],
                           responses={**OPERATOR_ERRORS, 503: {"model": ApiError,
                                                               "description": "Kafka does not answer"}})
ChannelName = Annotated[str, Path(max_length=100)]


class PauseRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON)
    endpoint: str | None = Field(default=None, max_length=300,
                                 description="Only this gateway instance or webhook host[:port] or URL.")


class ResumeRequest(BaseModel):
    reason: str = Field(default="", max_length=MAX_REASON)
    endpoint: str | None = Field(default=None, max_length=300)
    rate_per_s: float | None = Field(default=None, gt=0, description="At most this many sends per "
                                                                     "second per delivery process.")


def _bootstrap(wiring: Wiring) -> str:
    if wiring.kafka_bootstrap is None:
        raise KafkaUnavailable("Kafka is not configured and not running")
    return wiring.kafka_bootstrap


@channel_routes.get("")
def states(_who: Viewer, wiring: Wired, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
    """Each channel of the catalog (running or paused, its rate, its paused endpoints) and the
    latest changes, newest first."""
    history = control_history(_bootstrap(wiring), wiring.settings.namespace)
    return {"items": channel_states(wiring.catalog, history), "history": audit_rows(history, limit)}


def _change(wiring: Wiring, request: ChangeRequest) -> dict[str, Any]:
    try:
        change = request.checked(wiring.catalog)
    except ChannelControlError as exc:
        raise api_error(400, "bad_request", str(exc)) from None
    try:
        publish_change(_bootstrap(wiring), wiring.settings.namespace, change)
    except LookupError:  # the codec has no schema id: the registry did not answer at start
        raise api_error(503, "schema_registry_unavailable",
                        "the schema registry did not answer when the API started; restart it once the "
                        "registry is up") from None
    return {"target": change.target, "state": change.state, "rate_per_s": change.rate_per_s,
            "action_id": change.action_id, "actor": change.actor}


@channel_routes.post("/{channel}/pause")
def pause(channel: ChannelName, body: PauseRequest, who: Operator, wiring: Wired) -> dict[str, Any]:
    """Stop sending on the channel (or to one endpoint): workers keep their positions, nothing is
    dead-lettered, retry tiers wait."""
    return _change(wiring, ChangeRequest(channel, body.endpoint, "paused", body.reason, who.actor))


@channel_routes.post("/{channel}/resume")
def resume(channel: ChannelName, body: ResumeRequest, who: Operator, wiring: Wired) -> dict[str, Any]:
    """Send again, at once or at most `rate_per_s` per second per delivery process."""
    return _change(wiring, ChangeRequest(channel, body.endpoint, "running", body.reason, who.actor,
                                         body.rate_per_s))
