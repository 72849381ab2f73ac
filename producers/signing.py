"""HMAC-SHA256 request signing for the ingest API (pure functions; clients use `sign` too).

The signed message is `<timestamp>.<raw body>`, so a captured request cannot be replayed
outside the tolerance window, and the body cannot be altered. Several secrets may be
accepted at once, so a secret can be rotated without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

TIMESTAMP_HEADER = "X-Herald-Timestamp"
SIGNATURE_HEADER = "X-Herald-Signature"
_SCHEME = "sha256="
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")


class SignatureRejected(ValueError):
    """The request's signature headers do not prove it came from a holder of a secret, now."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SignedHeaders:
    timestamp: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {TIMESTAMP_HEADER: self.timestamp, SIGNATURE_HEADER: self.signature}


def sign(secret: str, body: bytes, timestamp: int) -> SignedHeaders:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SignedHeaders(str(timestamp), _SCHEME + digest.hexdigest())


def verify(secrets: Sequence[str], body: bytes, timestamp: str | None, signature: str | None,
           *, now: float, tolerance_s: float) -> None:
    """Raise SignatureRejected naming what is wrong; return when a secret signed this body now."""
    if not timestamp:
        raise SignatureRejected("missing_timestamp", f"the {TIMESTAMP_HEADER} header is missing")
    if not signature:
        raise SignatureRejected("missing_signature", f"the {SIGNATURE_HEADER} header is missing")
    if not _UNIX_SECONDS.match(timestamp):  # int() would take 4,300 digits, and float() refuse them
        raise SignatureRejected("bad_timestamp",
                                f"{TIMESTAMP_HEADER} must be Unix seconds (at most 12 digits)")
    sent_at = int(timestamp)
    skew = now - sent_at
    if abs(skew) > tolerance_s:
        raise SignatureRejected(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is {abs(skew):.0f} s {'old' if skew > 0 else 'ahead'}; "
            f"the tolerance is {tolerance_s:.0f} s (check the client's clock, or a replay)")
    # Compare against every secret, in constant time each, without stopping at a match.
    matched = False
    for secret in secrets:
        expected = sign(secret, body, sent_at).signature
        matched |= hmac.compare_digest(expected.encode(), signature.encode())
    if not matched:
        raise SignatureRejected("bad_signature",
                                f"{SIGNATURE_HEADER} does not match the body: expected "
                                f"{_SCHEME}<hex HMAC-SHA256 of '<timestamp>.<body>'>")
