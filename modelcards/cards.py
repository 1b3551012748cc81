"""Sections that higher apps add to a model card page (training details, deployments …).

modelcards cannot import the apps above it, so they register here from their
``AppConfig.ready()``: ``register_section("training", 20, render)`` where
``render(request, card)`` returns HTML (or None to show nothing). ``card`` is a
``BaseModel`` or a ``FineTunedModel``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils.safestring import SafeString, mark_safe

from console.actions import Actions


@dataclass(frozen=True)
class Section:
    name: str
    order: int
    render: Callable


_sections: dict[str, Section] = {}


def register_section(name: str, order: int, render: Callable) -> None:
    _sections[name] = Section(name, order, render)


def render_sections(request, card) -> list[SafeString]:
    out = []
    for section in sorted(_sections.values(), key=lambda s: (s.order, s.name)):
        html = section.render(request, card)
        if html:
            out.append(mark_safe(html))  # noqa: S308 - rendered by the registering app's templates
    return out


class Sentences:
    """A hook that higher apps add sentence-makers to: ``register(fn)`` where ``fn(card)`` returns a list of
    sentences; calling it with a card joins every maker's."""

    def __init__(self) -> None:
        self._makers: list[Callable] = []

    def register(self, fn: Callable) -> None:
        if fn not in self._makers:
            self._makers.append(fn)

    def __call__(self, card) -> list[str]:
        return [line for fn in self._makers for line in (fn(card) or [])]


# What else goes when a fine-tuned model is deleted, listed on the confirmation page (deployments lists each
# deployment of the model that will be cancelled).
delete_consequences = Sentences()
register_delete_consequences = delete_consequences.register

# Why a result's weights cannot be replaced now, by a promotion (deployments: a running deployment serves the
# weights it loaded).
promotion_blockers = Sentences()
register_promotion_blockers = promotion_blockers.register


# The buttons that apps above add to a model (Try, Fine-tune, Deploy): ``register_action(name, order, make)`` with
# ``make(request, card, place)`` as console/actions.py says. Places: "page" (the card's own page), "square" (its card
# on the model square), "row" (a checkpoint's row on its result's page) and "no-fine-tuned" (the square's hint when
# the user has no fine-tuned model yet; ``card`` is None).
card_actions = Actions()
register_action = card_actions.register
