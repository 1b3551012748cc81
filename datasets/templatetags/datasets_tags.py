from __future__ import annotations

from django import template

from ..services import human_bytes

register = template.Library()


@register.filter
def bytes_h(value: int | None) -> str:
    """1536 -> "1.5 KiB"."""
    return human_bytes(value)
