"""An evaluation's numbers and its one-line verdict: pure functions of the stored scores (no database, no calls).

Win rates count a tie as half a win and carry a Wilson 95% interval; an F1 difference (fine-tune minus base, per
prompt) carries a Student t 95% interval. "Better" and "regressed" mean the interval lies wholly on one side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

# Below this many prompts no interval means anything: the verdict says "not measurable".
MIN_MEASURABLE = 5
Z95 = 1.959964
# Student t, two-sided 95%, for 1..30 degrees of freedom (beyond: the normal's 1.96).
_T95 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


# ---------------------------------------------------------------- intervals


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``successes`` may be fractional: ties count half)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def mean_interval(values: list[float]) -> tuple[float, float, float] | None:
    """Mean and its 95% t interval; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


# ---------------------------------------------------------------- the judge's replies

_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?")


def parse_score(reply: str, low: float = 1, high: float = 10) -> float | None:
    """The judge's score in [low, high] from its reply ("8", "Score: 7/10", "**9**"); None if it gave none.
    A score out of another scale ("4/5", "0.8") is brought to this one."""
    for match in _NUMBER.finditer(reply or ""):
        value, scale = float(match.group(1)), match.group(2)
        if scale and float(scale) > 0 and float(scale) != high:
            value = low + (high - low) * value / float(scale) if value <= float(scale) else math.nan
        elif "." in match.group(1) and 0 <= value <= 1 and not scale:
            value = low + (high - low) * value
        if low <= value <= high:
            return value
    return None


# "[[A]]", "Answer B", a reply that starts with A or B (capital: "a good answer" is no choice), "tie".
_CHOICE = re.compile(
    r"\[\[\s*(A|B|tie)\s*\]\]|\b(?:answer|response)\s+(?-i:(A|B))\b|^\W*(?-i:(A|B))\b|\b(tie|equal|same)\b",
    re.IGNORECASE | re.MULTILINE,
)


def parse_choice(reply: str) -> str | None:
    """ "A", "B" or "tie" from a pairwise judge's reply; None if it says none of them."""
    match = _CHOICE.search(reply or "")
    if match is None:
        return None
    choice = next(g for g in match.groups() if g)
    choice = choice.upper() if choice.upper() in ("A", "B") else "tie"
    return choice


def pair_outcome(tune_first: str | None, base_first: str | None) -> str | None:
    """The fine-tune's result against the base from the judge's two choices, positions swapped (first: the
    fine-tune was answer A; second: the base was answer A). "win" or "loss" only when both orders agree, else
    "tie"; None when either reply had no choice in it."""
    if tune_first is None or base_first is None:
        return None
    first = {"A": "tune", "B": "base"}.get(tune_first, "tie")
    second = {"A": "base", "B": "tune"}.get(base_first, "tie")
    if first == second == "tune":
        return "win"
    if first == second == "base":
        return "loss"
    return "tie"


# ---------------------------------------------------------------- summaries


@dataclass
class Pairwise:
    wins: int = 0
    losses: int = 0
    ties: int = 0
    unjudged: int = 0

    @classmethod
    def of(cls, outcomes: list[str | None]) -> Pairwise:
        return cls(outcomes.count("win"), outcomes.count("loss"), outcomes.count("tie"), outcomes.count(None))

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float | None:
        """The fine-tune's win rate, a tie counting half."""
        return (self.wins + self.ties / 2) / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.wins + self.ties / 2, self.judged)

    def as_dict(self) -> dict:
        low, high = self.interval
        return {
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "unjudged": self.unjudged,
            "judged": self.judged,
            "rate": self.rate,
            "low": low,
            "high": high,
        }


@dataclass
class Verdict:
    kind: str  # better, same, worse, unmeasurable (the main question); regressed adds to any of them
    text: str
    n: int
    low: float | None = None
    high: float | None = None
    regression: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "text": self.text,
            "n": self.n,
            "low": self.low,
            "high": self.high,
            "regression": self.regression,
        }


def _f2(x: float) -> str:
    return f"{x:.2f}"


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def main_verdict(*, pairwise: Pairwise | None, f1_base: list[float], f1_tune: list[float]) -> Verdict:
    """Is the fine-tune better than its base on the task's own prompts? The judge's pairwise win rate when it
    judged enough prompts to measure, else the paired F1 difference."""
    if pairwise is not None and pairwise.judged >= MIN_MEASURABLE and pairwise.rate is not None:
        n = pairwise.judged
        low, high = pairwise.interval
        figures = _("win rate %(rate)s, 95%% CI %(low)s–%(high)s") % {
            "rate": _f2(pairwise.rate),
            "low": _f2(low),
            "high": _f2(high),
        }
        if low > 0.5:
            text = _("Better than base on %(wins)d of %(n)d prompts (%(figures)s)")
            kind = "better"
        elif high < 0.5:
            text = _("Worse than base on %(losses)d of %(n)d prompts (%(figures)s)")
            kind = "worse"
        else:
            text = _("No better than base: won %(wins)d, lost %(losses)d of %(n)d prompts (%(figures)s)")
            kind = "same"
        text %= {"wins": pairwise.wins, "losses": pairwise.losses, "n": n, "figures": figures}
        return Verdict(kind, text, n, low, high)
    n = min(len(f1_base), len(f1_tune))
    if n < MIN_MEASURABLE:
        return Verdict("unmeasurable", _unmeasurable(n), n)
    diffs = [t - b for b, t in zip(f1_base, f1_tune, strict=False)]
    measured = mean_interval(diffs)
    assert measured is not None  # at least MIN_MEASURABLE values
    mean, low, high = measured
    figures = _("F1 %(base)s → %(tune)s, difference %(diff)s, 95%% CI %(low)s to %(high)s") % {
        "base": _f2(sum(f1_base[:n]) / n),
        "tune": _f2(sum(f1_tune[:n]) / n),
        "diff": _signed(mean),
        "low": _signed(low),
        "high": _signed(high),
    }
    better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    if low > 0:
        kind, text = "better", _("Better than base on %(better)d of %(n)d prompts (%(figures)s)")
    elif high < 0:
        kind, text = "worse", _("Worse than base on %(worse)d of %(n)d prompts (%(figures)s)")
    else:
        kind, text = "same", _("No better than base on %(n)d prompts (%(figures)s)")
    text %= {"better": better, "worse": worse, "n": n, "figures": figures}
    return Verdict(kind, text, n, low, high)


def regression_verdict(*, pairwise: Pairwise | None, f1_base: list[float], f1_tune: list[float]) -> dict:
    """Has the fine-tune forgotten what its base knew? On the general prompts: regressed when it is significantly
    worse than the base (its win rate's interval below one half, or the F1 difference's below zero)."""
    if pairwise is not None and pairwise.judged >= MIN_MEASURABLE and pairwise.rate is not None:
        n = pairwise.judged
        low, high = pairwise.interval
        figures = _("win rate %(rate)s, 95%% CI %(low)s–%(high)s") % {
            "rate": _f2(pairwise.rate),
            "low": _f2(low),
            "high": _f2(high),
        }
        if high < 0.5:
            return {
                "kind": "regressed",
                "n": n,
                "low": low,
                "high": high,
                "text": _("Regressed: worse than base on %(losses)d of %(n)d general prompts (%(figures)s)")
                % {"losses": pairwise.losses, "n": n, "figures": figures},
            }
        return {
            "kind": "ok",
            "n": n,
            "low": low,
            "high": high,
            "text": _("no regression on %(n)d general prompts (%(figures)s)") % {"n": n, "figures": figures},
        }
    n = min(len(f1_base), len(f1_tune))
    if n < MIN_MEASURABLE:
        return {
            "kind": "unmeasurable",
            "n": n,
            "text": _("regression not measurable: %(what)s") % {"what": _prompts(n)},
        }
    diffs = [t - b for b, t in zip(f1_base, f1_tune, strict=False)]
    measured = mean_interval(diffs)
    assert measured is not None  # at least MIN_MEASURABLE values
    mean, low, high = measured
    figures = _("F1 difference %(diff)s, 95%% CI %(low)s to %(high)s") % {
        "diff": _signed(mean),
        "low": _signed(low),
        "high": _signed(high),
    }
    if high < 0:
        return {
            "kind": "regressed",
            "n": n,
            "low": low,
            "high": high,
            "text": _("Regressed: worse than base on %(worse)d of %(n)d general prompts (%(figures)s)")
            % {"worse": sum(d < 0 for d in diffs), "n": n, "figures": figures},
        }
    return {
        "kind": "ok",
        "n": n,
        "low": low,
        "high": high,
        "text": _("no regression on %(n)d general prompts (%(figures)s)") % {"n": n, "figures": figures},
    }


def _prompts(n: int) -> str:
    return ngettext("%(n)d prompt", "%(n)d prompts", n) % {"n": n}


def _unmeasurable(n: int) -> str:
    return _("Not measurable: %(what)s") % {"what": _prompts(n)}


def verdict(*, main: Verdict, regression: dict | None) -> Verdict:
    """The card's one line: the main verdict, then the regression check's (a regression comes first)."""
    if not regression:
        return main
    if regression["kind"] == "regressed":
        text = _("%(regression)s; %(main)s") % {"regression": regression["text"], "main": _lower(main.text)}
    else:
        text = _("%(main)s; %(regression)s") % {"main": main.text, "regression": _lower(regression["text"])}
    return Verdict(main.kind, text, main.n, main.low, main.high, regression)


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def best_model(means: list[dict]) -> str | None:
    """The fine-tuned model (a checkpoint or the result, not the base) with the highest mean score: the judge's
    where it scored, else F1. A tie goes to the later one (the result last)."""
    best, best_key = None, None
    for m in means:
        if m.get("role") == "base":
            continue
        score = m.get("judge") if m.get("judge") is not None else m.get("f1")
        if score is None:
            continue
        key = (m.get("judge") is not None, score)
        if best_key is None or key >= best_key:
            best, best_key = m["code"], key
    return best
