"""The code blocks a documentation page tells its reader to run, found the way a reader finds
them: by the page, the heading (or bold lead-in) they follow, and their fence's language."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def section(page: str, heading: str) -> str:
    """The text of `page` (a path from the repository root) from `heading` to the next heading
    of the same or a higher level (for a bold lead-in: to the next heading), outside code."""
    text = (ROOT / page).read_text()
    lines = text[text.index(heading):].split("\n")
    level = len(heading) - len(heading.lstrip("#")) or 6
    in_code = False
    for number, line in enumerate(lines[1:], 1):
        in_code ^= line.startswith("```")
        marks = len(line) - len(line.lstrip("#"))
        if not in_code and 0 < marks <= level and line[marks:marks + 1] == " ":
            return "\n".join(lines[:number])
    return "\n".join(lines)


def blocks(page: str, heading: str, language: str) -> list[str]:
    """The fenced `language` blocks of that section, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", section(page, heading), re.MULTILINE | re.DOTALL)
