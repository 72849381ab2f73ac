"""Ops API route over the notification history: a notification's whole story, for the console
and for scripts (`GET /v1/notifications`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from herald.ops.notification_history import StoryQuery, notification_stories
from herald.ops.ops_api import ERRORS, ApiError, Viewer, Wired, api_error
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
