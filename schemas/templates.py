"""A notification's text: its Jinja2 template, rendered in a sandbox.

One file per notification, `<templates>/<template>.j2`, and per locale
`<template>.<locale>.j2` (`id-ID`, else `id`, else the plain one) when the request's
parameters carry a `locale`. A file holds up to three blocks: `subject`, `text` and `html`.
`subject` and `text` are rendered as they are; `html` from the same source with every
value HTML-escaped. The sandbox keeps a template from reaching Python's internals, and an
undefined name is an error, never an empty string in someone's email.

What goes wrong while rendering is a `TemplateFailed` naming the template and the reason
(never a value): the delivery worker dead-letters that one notification and moves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

SUFFIX = ".j2"
BLOCKS = ("subject", "text", "html")
_LOCALE_PARAM = "locale"


class TemplateFailed(ValueError):
    """A template that is missing, does not parse, or fails while rendering."""


@dataclass(frozen=True)
class Rendered:
    """What a template made of one notification; a block the file lacks is None."""

    template: str  # the file used
    subject: str | None
    text: str | None
    html: str | None


def template_files(template: str, locale: str | None) -> list[str]:
    """The files that may hold a template for this locale, most specific first."""
    names = []
    if locale:
        names.append(f"{template}.{locale}{SUFFIX}")
        language = locale.replace("_", "-").split("-", 1)[0]
        if language != locale:
            names.append(f"{template}.{language}{SUFFIX}")
    names.append(f"{template}{SUFFIX}")
    return names


def _environment(folder: Path, escaped: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=jinja2.FileSystemLoader(folder), autoescape=escaped,
                                undefined=jinja2.StrictUndefined, auto_reload=False,
                                keep_trailing_newline=False)


class TemplateSet:
    """The templates of one catalog's folder, compiled once each."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._plain = _environment(self.folder, escaped=False)
        self._escaped = _environment(self.folder, escaped=True)

    def has(self, template: str) -> bool:
        return any((self.folder / name).is_file() for name in template_files(template, None))

    def syntax_problem(self, file_name: str) -> str | None:
        """Why the file cannot be a template (None when it can)."""
        try:
            self._plain.get_template(file_name)
        except jinja2.TemplateSyntaxError as exc:
            return f"{file_name} line {exc.lineno}: {exc.message}"
        except jinja2.TemplateNotFound:
            return f"{file_name} does not exist"
        return None

    def render(self, template: str, context: Mapping[str, Any]) -> Rendered:
        """The template for the context's locale, rendered; TemplateFailed says why not."""
        locale = context.get(_LOCALE_PARAM)
        file_name = self._file_for(template, str(locale) if locale else None)
        try:
            plain = self._plain.get_template(file_name)
            escaped = self._escaped.get_template(file_name)
            return Rendered(file_name, _block(plain, "subject", context), _block(plain, "text", context),
                            _block(escaped, "html", context))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateFailed(f"template {file_name} line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:  # undefined names, the sandbox's refusals
            raise TemplateFailed(f"template {file_name}: {type(exc).__name__}: {exc.message}") from None
        except Exception as exc:  # an expression that fails ({{ 1 / 0 }}): the template's fault
            raise TemplateFailed(f"template {file_name}: {type(exc).__name__}") from None

    def _file_for(self, template: str, locale: str | None) -> str:
        for name in template_files(template, locale):
            if (self.folder / name).is_file():
                return name
        raise TemplateFailed(f"no template {template}{SUFFIX} in {self.folder}")


def _block(template: jinja2.Template, name: str, context: Mapping[str, Any]) -> str | None:
    render = template.blocks.get(name)
    if render is None:
        return None
    text = "".join(render(template.new_context(dict(context)))).strip()
    return " ".join(text.split()) if name == "subject" else text + "\n"


def template_context(request: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees of a NotificationRequest: its parameters by name, and the
    notification itself as `notification` (id, type, subject_id, channel, recipient, event_type)."""
    notification = {"id": request["notification_id"], "type": request["notification_type"],
                    "subject_id": request["subject_id"], "channel": request["channel"],
                    "recipient": request["recipient"], "event_type": request.get("event_type", "")}
    return {**request["params"], "notification": notification}
