"""The overview page's panels. console is the lowest app, so the apps above it add theirs here
from their ``AppConfig.ready()``: ``register_panel("datasets", 10, "datasets/_overview.html", context)``
where ``context(request)`` returns the panel template's context (or None to leave it out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Panel:
    name: str
    order: int
    template: str
    context: Callable
    wide: bool = False


_panels: dict[str, Panel] = {}


def register_panel(name: str, order: int, template: str, context: Callable, *, wide: bool = False) -> None:
    _panels[name] = Panel(name, order, template, context, wide)


def panels(request) -> list[dict]:
    out = []
    for panel in sorted(_panels.values(), key=lambda p: (p.order, p.name)):
        context = panel.context(request)
        if context is not None:
            out.append({"name": panel.name, "template": panel.template, "data": context, "wide": panel.wide})
    return out
