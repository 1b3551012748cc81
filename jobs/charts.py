"""The loss chart: an SVG drawn on the server from the task's metrics events (one task, or several overlaid),
on common.charts' Frame. The partial is re-rendered on every poll, so the chart grows as the task trains.
"""

from __future__ import annotations

import math

from django.db.models.fields.json import KT

from common.charts import Frame, decimal_label, nice_step

WIDTH, HEIGHT = 900, 260
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 12, 28
MAX_POINTS = 400


def _downsample(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    return [points[int(i * step)] for i in range(MAX_POINTS)] + [points[-1]]


# One colour per task on the compare page (the console's blue, amber, green, red, then a violet).
SERIES_COLOURS = ("#2454ff", "#e37318", "#00a870", "#d54941", "#8e44ad")


def _losses(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    return [
        (m["current_steps"], m[key]) for m in metrics if m.get(key) is not None and m.get("current_steps") is not None
    ]


def overlay_chart(series: list[tuple[str, list[dict]]]) -> dict | None:
    """Train and validation loss of one or more runs against steps, on shared axes with round ticks.

    ``series`` is ``[(label, metrics), …]``; each run keeps at most MAX_POINTS points per line
    (a six-hour task has about 20,000). None when no run has a loss yet.
    """
    lines = [(label, metrics, _losses(metrics, "loss"), _losses(metrics, "eval_loss")) for label, metrics in series]
    points = [p for _label, _m, train, evals in lines for p in train + evals]
    if not points:
        return None
    total = max(
        [m.get("total_steps") or 0 for _l, metrics, _t, _e in lines for m in metrics] + [p[0] for p in points] + [1]
    )
    values = [p[1] for p in points]
    low, high = min(values), max(values)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    y_step = nice_step(high - low)
    low = max(0.0, math.floor(low / y_step) * y_step)
    high = math.ceil(high / y_step) * y_step
    if high - low < y_step:
        high = low + y_step
    x_step = max(1, int(nice_step(total)))
    frame = Frame(WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM, low, high, x_span=total)

    def xy(step: float, value: float) -> tuple[float, float]:
        return frame.x(step), frame.y(value)

    def polyline(pts):
        return " ".join(f"{x},{y}" for x, y in (xy(s, v) for s, v in _downsample(pts)))

    y_ticks = frame.y_ticks(y_step, lambda value: decimal_label(value, y_step))
    x_ticks = [{"x": frame.x(step), "label": f"{step:,}"} for step in range(0, total + 1, x_step)]
    drawn = [
        {
            "label": label,
            "colour": SERIES_COLOURS[n % len(SERIES_COLOURS)],
            "train": polyline(train),
            "eval": polyline(evals),
            "eval_points": [
                dict(zip(("x", "y"), xy(s, v), strict=True)) | {"value": f"{v:.4f}"} for s, v in _downsample(evals)
            ],
            "last_loss": train[-1][1] if train else None,
            "last_eval": evals[-1][1] if evals else None,
            "first_loss": train[0][1] if train else None,
        }
        for n, (label, _metrics, train, evals) in enumerate(lines)
    ]
    return frame.box() | {"y_ticks": y_ticks, "x_ticks": x_ticks, "series": drawn, "overlay": True}


def loss_chart(metrics: list[dict]) -> dict | None:
    """One task's chart: the overlay of a single run, its lines also at the top level (``train``, ``eval`` …)."""
    chart = overlay_chart([("", metrics)])
    if chart is None:
        return None
    line = {key: value for key, value in chart["series"][0].items() if key not in ("label", "colour")}
    return chart | line | {"overlay": False}


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

    rows = (
        JobEvent.objects.filter(job=job, type=JobEvent.Type.METRICS)
        .order_by("id")
        .values_list(
            KT("data__current_steps"),
            KT("data__total_steps"),
            KT("data__loss"),
            KT("data__eval_loss"),
        )
    )
    return [
        {
            "current_steps": _number(steps, int),
            "total_steps": _number(total, int),
            "loss": _number(loss),
            "eval_loss": _number(eval_loss),
        }
        for steps, total, loss, eval_loss in rows
    ]
