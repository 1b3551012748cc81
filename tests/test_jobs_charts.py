"""The server-drawn loss chart: round ticks that cover the data, points inside the plot."""

from __future__ import annotations

from common.charts import nice_step
from jobs.charts import loss_chart


def _metrics(losses, total=None, evals=None):
    rows = [{"current_steps": i + 1, "total_steps": total or len(losses), "loss": v} for i, v in enumerate(losses)]
    for step, value in (evals or {}).items():
        rows.append({"current_steps": step, "total_steps": total or len(losses), "eval_loss": value})
    return rows


def test_nice_steps_are_round():
    assert [nice_step(s) for s in (3.81, 0.3, 0.51, 1, 1720, 117)] == [1, 0.1, 0.2, 0.25, 500, 50]


def test_ticks_are_round_and_cover_every_point():
    chart = loss_chart(_metrics([3.81 / (i + 1) for i in range(117)], evals={39: 0.104, 78: 0.132, 117: 0.127}))
    assert [t["label"] for t in chart["y_ticks"]] == ["0", "1", "2", "3", "4"]
    assert [t["label"] for t in chart["x_ticks"]] == ["0", "50", "100"]
    ys = [float(p.split(",")[1]) for p in chart["train"].split()] + [p["y"] for p in chart["eval_points"]]
    assert all(chart["top"] <= y <= chart["bottom"] for y in ys)
    xs = [float(p.split(",")[0]) for p in chart["train"].split()]
    assert xs[-1] == chart["right"] and all(chart["left"] <= x <= chart["right"] for x in xs)


def test_a_narrow_range_high_above_zero_gets_its_own_scale():
    chart = loss_chart(_metrics([10.88 - i / 1000 for i in range(500)], total=1720))
    labels = [t["label"] for t in chart["y_ticks"]]
    assert labels[0] != "0" and float(labels[0]) <= 10.381 and float(labels[-1]) >= 10.88
    assert [t["label"] for t in chart["x_ticks"]] == ["0", "500", "1,000", "1,500"]


def test_nothing_to_draw_yet():
    assert loss_chart([{"current_steps": 0, "total_steps": 10}]) is None
