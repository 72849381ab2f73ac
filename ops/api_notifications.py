"""Ops API route over the notification history: a notification's whole story, for the console
and for scripts (`GET /v1/notifications`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from herald.infra.kafka_views import KafkaUnavailable
from herald.ops.notification_history import StoryQuery, notification_stories
from herald.ops.ops_api import ERRORS, ApiError, Viewer, Wired, api_error
from herald.ops.status_graphs import status_graphs
from herald.schemas.tables import HISTORY_KINDS

notifications = APIRouter(prefix="/v1/notifications", tags=["notifications"],
                          responses={**ERRORS, 422: {"model": ApiError, "description": "Nothing to look up"}})
Text = Annotated[str | None, Query(max_length=400)]


@notifications.get("")
def stories(who: Viewer, wiring: Wired, key: Text = None, recipient: Text = None,
            type: Annotated[str | None, Query(max_length=100)] = None,
            status: Annotated[str | None, Query(description=f"one of {', '.join(HISTORY_KINDS)}")] = None,
            since: datetime | None = None,
            field: Annotated[str | None, Query(
                max_length=400, description="NAME=VALUE: a field of the triggering event, as the "
                                            "catalog maps it, e.g. user_id=42")] = None,
            ) -> dict[str, Any]:
    """Every notification of an event key (or a notification id) or of a recipient, newest first,
    each with its timeline; phone numbers and emails masked unless the caller is an operator."""
    name, sep, value = (field or "").partition("=")
    if field is not None and (not sep or not name):
        raise api_error(422, "invalid_field", "field takes NAME=VALUE, e.g. user_id=42")
    query = StoryQuery(key, recipient, type, status, since, (name, value) if field is not None else None)
    if problems := query.problems():
        raise api_error(422, "invalid_query", "; ".join(problems))
    found = notification_stories(wiring.engine, query, mask=not who.is_operator)
    return {"count": len(found), "items": found}


@notifications.get("/stats", responses={503: {"model": ApiError, "description": "Kafka does not answer"}})
def stats(_who: Viewer, wiring: Wired, minutes: Annotated[int, Query(ge=1, le=1440)] = 60) -> dict[str, Any]:
    """Per minute, per notification and channel: how many were sent, retried and dead-lettered
    (from notifications.status.stats), oldest minute first."""
    if wiring.kafka_bootstrap is None:
        raise KafkaUnavailable("Kafka is not configured and not running")
    return status_graphs(wiring.kafka_bootstrap, wiring.settings.namespace, minutes)
