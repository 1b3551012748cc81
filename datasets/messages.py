"""Messages kept as their English template and parameters, and rendered in the reader's language.

A validation problem is found once, by a worker in the uploader's language, and read later by
anyone in theirs. So ``schema.py`` and ``validation.py`` build their messages with this module's
``_`` and ``ngettext`` instead of Django's: the same calls (``_("... %(type)s ...") % {...}``, so
``makemessages`` finds the templates as usual), but the result is a ``Message`` that keeps the
template and its parameters. ``str(message)`` translates it into the active language;
``as_json()`` is what ``ValidationIssue.message_args`` stores, and ``Message.from_json`` reads it
back. A parameter may itself be a ``Message`` ("not a number" renders "a number" in the same
language).
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import translation

Params = dict[str, Any]


class Message:
    """An English template (``msgid``), an optional plural form and count, and its parameters."""

    __slots__ = ("count", "params", "plural", "singular")

    def __init__(
        self, singular: str, plural: str | None = None, count: int | None = None, params: Params | None = None
    ):
        self.singular = singular
        self.plural = plural
        self.count = count
        self.params = params

    def __mod__(self, params: Params) -> Message:
        return Message(self.singular, self.plural, self.count, dict(params))

    def __str__(self) -> str:
        if self.plural is not None:
            text = translation.ngettext(self.singular, self.plural, self.count or 0)
        else:
            text = translation.gettext(self.singular)
        if self.params is None:
            return text
        return text % {key: str(value) if isinstance(value, Message) else value for key, value in self.params.items()}

    def __repr__(self) -> str:
        return f"Message({self.singular!r}, params={self.params!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Message):
            return self.as_json() == other.as_json()
        if isinstance(other, str):  # a message equals the text it renders in the active language
            return str(self) == other
        return NotImplemented

    def __contains__(self, text: str) -> bool:
        return text in str(self)

    __hash__ = None  # type: ignore[assignment]

    def english(self) -> str:
        """The message in the platform's language (the API, the admin, the database's plain text)."""
        with translation.override("en"):
            return str(self)

    def as_json(self) -> dict:
        data: dict[str, Any] = {"text": self.singular}
        if self.plural is not None:
            data["plural"] = self.plural
            data["count"] = self.count
        if self.params is not None:
            data["params"] = {
                key: value.as_json() if isinstance(value, Message) else _plain(value)
                for key, value in self.params.items()
            }
        return data

    @classmethod
    def from_json(cls, data: Any) -> Message | None:
        """The message ``as_json`` stored, or None for anything else (a row from before, a damaged value)."""
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            return None
        plural = data.get("plural")
        count = data.get("count")
        params = data.get("params")
        if plural is not None and (not isinstance(plural, str) or not isinstance(count, int)):
            return None
        if params is not None:
            if not isinstance(params, dict):
                return None
            params = {
                key: (cls.from_json(value) or "") if isinstance(value, dict) else value for key, value in params.items()
            }
        return cls(data["text"], plural, count, params)


def _plain(value: Any) -> Any:
    """A parameter as JSON can hold it (numbers and text stay as they are)."""
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def _(message: str) -> Message:  # noqa: N802 - named like gettext so that makemessages finds the templates
    """A message to translate when it is shown (see the module's docstring)."""
    return Message(message)


def ngettext(singular: str, plural: str, count: int) -> Message:
    """A message with a plural form, translated when it is shown."""
    return Message(singular, plural, count)


def render(data: Any, fallback: str = "") -> str:
    """A stored message (``as_json``) in the active language; ``fallback`` where none was stored."""
    if isinstance(data, str):  # a JSON column read through a subquery on some databases
        try:
            data = json.loads(data)
        except ValueError:
            return fallback
    message = Message.from_json(data)
    if message is None:
        return fallback
    try:
        return str(message)
    except (KeyError, TypeError, ValueError):  # a template whose parameters changed since
        return fallback
