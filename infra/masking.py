"""Phone numbers and email addresses masked wherever many records are shown at once (lists,
logs, the console). Only one message's detail, shown to an operator, has them whole."""

from __future__ import annotations

import re
from typing import Any

# An email address; a phone number: international (+62...) or national (08...), 9+ digits,
# maybe with spaces or dashes. Other long numbers (epoch milliseconds, offsets) are not phones.
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_PHONE = re.compile(r"(?<![\w+])(\+\d|0)([\d -]{4,}\d)(\d{3})(?![\w])")


def _phone(match: re.Match[str]) -> str:
    hidden = sum(c.isdigit() for c in match.group(1) + match.group(2))
    return f"{'+' if match.group(1).startswith('+') else ''}{'•' * hidden}{match.group(3)}"


def mask_text(text: str) -> str:
    """`text` with every email address and phone number masked: a.b@x.id -> a•••@x.id,
    +6281234567890 -> +••••••••••890."""
    return _PHONE.sub(_phone, _EMAIL.sub(r"\1•••@\2", text))


def mask_value(value: Any) -> Any:
    """A JSON-like value with every string in it masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    return value
