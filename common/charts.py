"""Charts drawn on the server as SVG coordinates: the one builder under the task's loss chart (lines, one run or
several overlaid: jobs/charts.py) and the usage page's bars of tokens a day (experience/services.py).

No chart library: a polled partial re-renders the chart as its numbers grow, and it works without JavaScript.
A ``Frame`` is the drawing area (the SVG's size less its padding) over a value range with round ticks; it turns
values into pixel coordinates rounded to a tenth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


def nice_step(span: float, target: int = 4) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) that cuts ``span`` into about ``target`` parts."""
    if span <= 0:
        return 1.0
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def decimal_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the step has (0.25 → 2, 0.5 → 1, 2 → 0)."""
    decimals = len(f"{step:.6f}".rstrip("0").split(".")[1])
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Frame:
    """An SVG of ``width`` × ``height`` whose plot leaves ``pad_*`` pixels on each side; values from ``low`` to
    ``high`` go up the plot, ``0`` to ``x_span`` across it."""

    width: int
    height: int
    pad_left: int
    pad_right: int
    pad_top: int
    pad_bottom: int
    low: float
    high: float
    x_span: float = 1

    @property
    def plot_w(self) -> float:
        return self.width - self.pad_left - self.pad_right

    @property
    def plot_h(self) -> float:
        return self.height - self.pad_top - self.pad_bottom

    @property
    def base_y(self) -> int:
        """The plot's bottom edge."""
        return self.height - self.pad_bottom

    def x(self, value: float) -> float:
        return round(self.pad_left + self.plot_w * value / self.x_span, 1)

    def y(self, value: float) -> float:
        return round(self.pad_top + self.plot_h * (self.high - value) / (self.high - self.low), 1)

    def y_ticks(self, step: float, label: Callable[[float], str]) -> list[dict]:
        """A tick every ``step`` from ``low`` to ``high``: its ``y`` and ``label``."""
        values = [self.low + i * step for i in range(int(round((self.high - self.low) / step)) + 1)]
        return [{"y": self.y(value), "label": label(value)} for value in values]

    def bar(self, index: int, value: float, gap: float = 0.1) -> dict:
        """The ``index``-th of ``x_span`` bars standing on the bottom edge, ``gap`` of its slot clear on each side:
        its x, y, w and h."""
        slot = self.plot_w / self.x_span
        h = self.plot_h * (value - self.low) / (self.high - self.low)
        return {
            "x": round(self.pad_left + index * slot + slot * gap, 1),
            "y": round(self.base_y - h, 1),
            "w": round(max(slot * (1 - 2 * gap), 1), 1),
            "h": round(h, 1),
        }

    def box(self) -> dict:
        """The plot's edges, for the axes a template draws."""
        return {
            "width": self.width,
            "height": self.height,
            "left": self.pad_left,
            "right": self.width - self.pad_right,
            "top": self.pad_top,
            "bottom": self.base_y,
        }
