"""The loss chart: an SVG drawn on the server from the task's metrics events.

No chart library: the partial is re-rendered on every poll, so the chart
grows as the task trains, and it works without JavaScript.
"""

from __future__ import annotations

import math

from django.db.models.fields.json import KT

WIDTH, HEIGHT = 900, 260
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28
MAX_POINTS = 400


def _downsample(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]


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


def _label(value: float, step: float) -> str:
    """``value`` with as many decimals as the step has (0.25 → 2, 0.5 → 1, 2 → 0)."""
    decimals = len(f"{step:.6f}".rstrip("0").split(".")[1])
    return f"{value:.{decimals}f}"


def loss_chart(metrics: list[dict]) -> dict | None:
    """Polylines for train and validation loss against steps, with axis ticks."""
    train = [(m["current_steps"], m["loss"]) for m in metrics
             if m.get("loss") is not None and m.get("current_steps") is not None]
    evals = [(m["current_steps"], m["eval_loss"]) for m in metrics
             if m.get("eval_loss") is not None and m.get("current_steps") is not None]
    if not train and not evals:
        return None
    total = max([m.get("total_steps") or 0 for m in metrics] + [p[0] for p in train + evals] + [1])
    values = [p[1] for p in train + evals]
    low, high = min(values), max(values)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    y_step = nice_step(high - low)
    low = max(0.0, math.floor(low / y_step) * y_step)
    high = math.ceil(high / y_step) * y_step
    if high - low < y_step:
        high = low + y_step
    x_step = max(1, int(nice_step(total)))
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(step: float, value: float) -> tuple[float, float]:
        return (round(PAD_LEFT + plot_w * step / total, 1), round(PAD_TOP + plot_h * (high - value) / (high - low), 1))

    def polyline(points):
        return " ".join(f"{x},{y}" for x, y in (xy(s, v) for s, v in _downsample(points)))

    y_ticks = [{"y": xy(0, low + i * y_step)[1], "label": _label(low + i * y_step, y_step)}
               for i in range(int(round((high - low) / y_step)) + 1)]
    x_ticks = [{"x": xy(step, low)[0], "label": f"{step:,}"} for step in range(0, total + 1, x_step)]
    return {
        "width": WIDTH, "height": HEIGHT, "left": PAD_LEFT, "right": WIDTH - PAD_RIGHT,
        "top": PAD_TOP, "bottom": HEIGHT - PAD_BOTTOM,
        "train": polyline(train), "eval": polyline(evals),
        "eval_points": [dict(zip(("x", "y"), xy(s, v), strict=True)) | {"value": f"{v:.4f}"} for s, v in evals],
        "y_ticks": y_ticks, "x_ticks": x_ticks,
        "last_loss": train[-1][1] if train else None, "last_eval": evals[-1][1] if evals else None,
        "first_loss": train[0][1] if train else None,
    }


def _number(text: str | None, kind=float):
    """A number from a JSON value extracted as text (None for null or missing).

    SQLite's ->> gives a JSON null as the text "null"; PostgreSQL gives SQL NULL.
    """
    if text is None or text == "null":
        return None
    return kind(float(text))


def chart_metrics(job) -> list[dict]:
    """The four numbers the loss chart draws, per metrics event, extracted by the database.

    A six-hour task has about 20,000 metrics events and its page polls every two seconds;
    decoding each whole JSON document made a poll 1.4x (SQLite) to 3.3x (PostgreSQL) slower
    (tests/perf/bench_task_poll.py).
    """
    from .models import JobEvent

    rows = JobEvent.objects.filter(job=job, type=JobEvent.Type.METRICS).order_by("id").values_list(
        KT("data__current_steps"), KT("data__total_steps"), KT("data__loss"), KT("data__eval_loss"),
    )
    return [{"current_steps": _number(steps, int), "total_steps": _number(total, int),
             "loss": _number(loss), "eval_loss": _number(eval_loss)} for steps, total, loss, eval_loss in rows]
