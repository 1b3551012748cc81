from __future__ import annotations

from django import template

from ..services import human_bytes

register = template.Library()


@register.filter
def bytes_h(value: int | None) -> str:
    """1536 -> "1.5 KiB"."""
    return human_bytes(value)


@register.inclusion_tag("console/partials/actions.html", takes_context=True)
def dataset_actions(context, dataset, place: str = "page") -> dict:
    """The buttons the apps above registered for a dataset (datasets/next_steps.py)."""
    from ..next_steps import dataset_actions as actions

    return {"actions": actions(context["request"], dataset, place)}
