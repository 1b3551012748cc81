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


# What else goes when a fine-tuned model is deleted, listed on the confirmation page:
# ``register_delete_consequences(fn)`` where ``fn(card)`` returns a list of sentences
# (deployments lists each deployment of the model that will be cancelled).
_delete_consequences: list[Callable] = []


def register_delete_consequences(fn: Callable) -> None:
    if fn not in _delete_consequences:
        _delete_consequences.append(fn)


def delete_consequences(card) -> list[str]:
    out: list[str] = []
    for fn in _delete_consequences:
        out.extend(fn(card) or [])
    return out


# Why a result's weights cannot be replaced now (a promotion): ``register_promotion_blockers(fn)`` where
# ``fn(card)`` returns a list of sentences (deployments: a running deployment serves the weights it loaded).
_promotion_blockers: list[Callable] = []


def register_promotion_blockers(fn: Callable) -> None:
    if fn not in _promotion_blockers:
        _promotion_blockers.append(fn)


def promotion_blockers(card) -> list[str]:
    out: list[str] = []
    for fn in _promotion_blockers:
        out.extend(fn(card) or [])
    return out
