"""API tokens: created and revoked with the CLI, checked by the ops API. Roles: a viewer reads;
an operator also replays, discards, resends and reconnects."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from herald.schemas.tables import API_ROLES, ApiToken

TOKEN_PREFIX = "hrd_"  # recognisable in a leaked log or a secret scanner


class TokenError(ValueError):
    """A token request that cannot be done (unknown role, name taken, no such token)."""


@dataclass(frozen=True)
class Caller:
    name: str
    role: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(session: Session, name: str, role: str) -> str:
    """A new token; the only time it is seen whole."""
    if role not in API_ROLES:
        raise TokenError(f"unknown role {role!r}; known: {', '.join(API_ROLES)}")
    if session.scalar(sa.select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists; revoke it or choose another name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, token_sha256=_digest(token)))
    return token


def revoke_token(session: Session, name: str) -> None:
    row = session.scalar(sa.select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
    if row is None:
        raise TokenError(f"no active token named {name!r}")
    row.revoked_at = sa.func.clock_timestamp()  # type: ignore[assignment]


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(sa.select(ApiToken).order_by(ApiToken.id)))


def caller_of(session: Session, token: str) -> Caller | None:
    """Who holds `token`, or None when it is unknown or revoked."""
    row = session.scalar(sa.select(ApiToken).where(ApiToken.token_sha256 == _digest(token),
                                                   ApiToken.revoked_at.is_(None)))
    return None if row is None else Caller(row.name, row.role)
