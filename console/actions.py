"""Buttons that higher apps add to a lower app's page: a lower app cannot name a higher app's URL, so it offers
an ``Actions`` hook and renders whatever the apps above registered from their ``AppConfig.ready()``.

``hook.register(name, order, make)`` where ``make(request, obj, place)`` returns an action, a dict with ``label``
and ``url`` (``None``: shown disabled, with ``reason`` as its title), and optionally ``primary`` (the page's main
action) and ``testid``; or None to show nothing there. ``place`` says where the buttons go, as the offering app
documents it. Templates draw them with ``console/partials/actions.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    name: str
    order: int
    make: Callable


class Actions:
    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def register(self, name: str, order: int, make: Callable) -> None:
        self._actions[name] = Action(name, order, make)

    def __call__(self, request, obj, place: str = "page") -> list[dict]:
        out = []
        for action in sorted(self._actions.values(), key=lambda a: (a.order, a.name)):
            made = action.make(request, obj, place)
            if made is not None:
                out.append({"name": action.name, "primary": False, "reason": "", "testid": "", **made})
        return out
