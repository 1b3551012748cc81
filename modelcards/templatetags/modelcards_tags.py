"""``{% card_actions card "square" %}``: the buttons the apps above registered for a model (modelcards/cards.py)."""

from __future__ import annotations

from django import template

from .. import cards

register = template.Library()


@register.inclusion_tag("console/partials/actions.html", takes_context=True)
def card_actions(context, card, place: str = "page") -> dict:
    return {
        "actions": cards.card_actions(context["request"], card, place),
        "small": place == "row",
        "plain": place == "no-fine-tuned",
    }
