"""Experience center services: calls through the gateway for a signed-in user, evaluations, and usage figures.

Every model call here goes through ``deployments.gateway.handle`` (the API's own code path: the same route
resolution, ownership rules, pool preparation and usage records), with the user of the session or of the task in
place of an API key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import string
import time
from collections import Counter, defaultdict
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext as _

from deployments import gateway
from deployments.models import ApiCall, Deployment
from jobs.models import FineTuningJob, JobStatus
from modelcards.models import BaseModel, FineTunedModel

from .models import Evaluation, EvaluationItem, EvaluationStatus

logger = logging.getLogger(__name__)

EVAL_LIMIT = 50


class CallFailed(Exception):
    """The gateway answered with an error (its message is the API's own)."""


# ---------------------------------------------------------------- calls for a signed-in user


_loop: asyncio.AbstractEventLoop | None = None
START_WAIT_SECONDS = 600  # how long a call waits for an idle public pool to start an instance


class NoLongerWanted(Exception):
    """The work a call was made for ended (deleted or cancelled) while the call waited for a pool to start."""


def chat_complete(*, user, body: dict, wanted=None) -> dict:
    """A non-streamed chat completion for ``user`` through the gateway; the answer's JSON, or CallFailed.
    ``wanted``: asked before each wait for a starting pool; False ends the call (NoLongerWanted)."""
    global _loop
    raw = json.dumps({**body, "stream": False}).encode()
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()  # one loop per process: the gateway keeps its HTTP client per loop
    waited_until = time.monotonic() + START_WAIT_SECONDS
    while True:
        reply = _loop.run_until_complete(gateway.handle("POST", None, raw, None, user=user))
        data = json.loads(reply.body)
        # A public pool that was idle starts an instance for this call: wait for it (an evaluation's answers
        # matter more than its speed), then ask again.
        starting = reply.status == 503 and (data.get("error") or {}).get("code") == "model_starting"
        if not starting or time.monotonic() > waited_until:
            break
        if wanted is not None and not wanted():
            raise NoLongerWanted(body.get("model"))
        time.sleep(min(10.0, float(reply.headers.get("Retry-After") or 5)))
    if reply.status != 200:
        raise CallFailed((data.get("error") or {}).get("message") or f"HTTP {reply.status}")
    return data


def callable_models(*, user) -> list[dict]:
    """What the user may try: base models, their live fine-tunes and their running deployments. A base model this
    server cannot serve (no weights here, say) is listed with ``disabled`` and the reason."""
    out = []
    for m in BaseModel.objects.usable_by(user).filter(modality="text"):
        serve = m.capabilities().serve
        out.append({"code": m.code, "label": m.display_name, "kind": "base", "base": "", "disabled": not serve,
                    "reason": "" if serve else serve.reason})
    out += [
        {"code": m.code, "label": m.code, "kind": "fine-tune", "base": m.base_model.code}
        for m in FineTunedModel.objects.live().filter(owner=user).select_related("base_model")
    ]
    out += [
        {"code": d.code, "label": d.code, "kind": "deployment", "base": ""}
        for d in Deployment.objects.owned_by(user).filter(status="running")
    ]
    kinds = {"base": _("base"), "fine-tune": _("fine-tune"), "deployment": _("deployment")}
    for entry in out:
        entry["kind_label"] = kinds[entry["kind"]]
    return out


# ---------------------------------------------------------------- scores

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> list[str]:
    """Lower case, punctuation removed, split on whitespace (the SQuAD normalisation, less the articles)."""
    return _PUNCT.sub(" ", (text or "").lower()).split()


def exact_match(answer: str, reference: str) -> float:
    return 1.0 if normalize(answer) == normalize(reference) else 0.0


def token_f1(answer: str, reference: str) -> float:
    """Token-overlap F1 between the normalised answer and reference."""
    a, r = normalize(answer), normalize(reference)
    if not a or not r:
        return 1.0 if a == r else 0.0
    common = sum((Counter(a) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------- evaluation


def _text(content) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _prompt_and_reference(example: dict) -> tuple[list[dict], str] | None:
    if "preferred_output" in example:
        prompt = (example.get("input") or {}).get("messages") or example.get("messages") or []
        preferred = example.get("preferred_output") or []
        return (list(prompt), _text(preferred[-1].get("content"))) if prompt and preferred else None
    messages = example.get("messages") or []
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if not last or example.get("tools"):
        return None
    prompt = [{"role": m["role"], "content": _text(m.get("content"))} for m in messages[:last]]
    return prompt, _text(messages[last].get("content"))


def evaluation_prompts(*, job: FineTuningJob) -> tuple[list[tuple[list[dict], str]], str]:
    """The task's validation examples, or the examples its automatic split held back (the engine's own split:
    same fraction and seed), at most EVAL_LIMIT; and where they came from."""
    from datasets.services import dataset_iter_examples

    if job.validation_dataset_id:
        examples = list(dataset_iter_examples(dataset=job.validation_dataset))
        source = _("validation set %(name)s") % {"name": job.validation_dataset.name}
    else:
        import random

        examples = list(dataset_iter_examples(dataset=job.training_dataset))
        indices = list(range(len(examples)))  # jobs.training.engine.split_examples (without importing torch)
        random.Random(42).shuffle(indices)
        held = set(indices[: max(1, round(len(examples) * 0.1))] if len(examples) > 1 else [])
        examples = [e for i, e in enumerate(examples) if i in held]
        source = _("examples held back from %(name)s") % {"name": job.training_dataset.name}
    pairs = [p for p in (_prompt_and_reference(e) for e in examples) if p]
    return pairs[:EVAL_LIMIT], source


def evaluation_start(*, job: FineTuningJob) -> Evaluation | None:
    """Queue an evaluation of a succeeded task (a re-run starts a new one). None if the task has no live card or
    one is already under way."""
    card = job.result
    if job.status != JobStatus.SUCCEEDED or card is None or card.deleted_at is not None:
        return None
    if card.modality != "text":
        return None
    with transaction.atomic():
        if Evaluation.objects.filter(job=job, status__in=[EvaluationStatus.QUEUED, EvaluationStatus.RUNNING]).exists():
            return None
        evaluation = Evaluation.objects.create(job=job, model=card)
        from .tasks import evaluate

        transaction.on_commit(lambda: evaluate.delay(evaluation.pk))
    return evaluation


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluation_run(*, evaluation: Evaluation) -> str:
    """Answer every prompt with the base model and the fine-tune (through the pool) and score both answers."""
    if not Evaluation.objects.filter(pk=evaluation.pk, status=EvaluationStatus.QUEUED).update(
        status=EvaluationStatus.RUNNING
    ):
        return "skip"
    evaluation.refresh_from_db()
    job, card = evaluation.job, evaluation.model

    def wanted() -> bool:  # a deleted task or card takes its evaluation with it: stop waiting for the pool
        return Evaluation.objects.filter(pk=evaluation.pk, status=EvaluationStatus.RUNNING).exists()

    try:
        pairs, source = evaluation_prompts(job=job)
        Evaluation.objects.filter(pk=evaluation.pk).update(total=len(pairs), source=source[:200])
        max_tokens = int(getattr(settings, "EVALUATION_MAX_TOKENS", 96))
        for index, (messages, reference) in enumerate(pairs):
            item = EvaluationItem(evaluation=evaluation, index=index, messages=messages, reference=reference)
            errors = []
            for side, code in (("base", card.base_model.code), ("tune", card.code)):
                body = {
                    "model": code,
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                    "request_id": f"eval-{evaluation.pk}-{index}-{side}",
                }
                try:
                    data = chat_complete(user=job.owner, body=body, wanted=wanted)
                    answer = _text(data["choices"][0]["message"].get("content"))
                except (CallFailed, KeyError, IndexError) as exc:
                    errors.append(f"{code}: {exc}")
                    answer = ""
                setattr(item, f"{side}_answer", answer)
                setattr(item, f"{side}_exact", exact_match(answer, reference))
                setattr(item, f"{side}_f1", token_f1(answer, reference))
            item.error = "; ".join(errors)
            item.save()
            Evaluation.objects.filter(pk=evaluation.pk).update(done=index + 1)
        items = list(evaluation.items.all())
        if items and all(i.error for i in items):
            raise CallFailed(items[0].error)
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status=EvaluationStatus.SUCCEEDED,
            finished_at=timezone.now(),
            base_exact=_mean([i.base_exact for i in items]),
            base_f1=_mean([i.base_f1 for i in items]),
            tune_exact=_mean([i.tune_exact for i in items]),
            tune_f1=_mean([i.tune_f1 for i in items]),
        )
        return "succeeded"
    except NoLongerWanted:
        logger.info("evaluation %s: gone while waiting for the public pool; stopped", evaluation.pk)
        return "gone"
    except Exception as exc:
        logger.exception("evaluation %s failed", evaluation.pk)
        Evaluation.objects.filter(pk=evaluation.pk).update(
            status=EvaluationStatus.FAILED, finished_at=timezone.now(), error=str(exc)[:2000]
        )
        return "failed"


# ---------------------------------------------------------------- usage


def _prices(codes: set[str]) -> dict[str, Decimal]:
    """Inference price per 1,000 tokens of each called code, from the catalog (a fine-tune or a deployment pays
    its base model's price). Three queries whatever the number of codes."""
    prices = {m.code: m.inference_price for m in BaseModel.objects.filter(code__in=codes)}
    for code, price in FineTunedModel.objects.filter(code__in=codes).values_list("code", "base_model__inference_price"):
        prices[code] = price
    for code, base_price, tune_price in Deployment.objects.filter(code__in=codes).values_list(
        "code", "base_model__inference_price", "fine_tuned_model__base_model__inference_price"
    ):
        prices[code] = base_price if base_price is not None else tune_price
    return {code: prices.get(code) or Decimal(0) for code in codes}


def _cost(tokens: int, price: Decimal) -> Decimal:
    return (Decimal(tokens) / 1000 * price).quantize(Decimal("0.0001"))


def usage_report(*, user=None, start: dt.date, end: dt.date) -> dict:
    """Calls and tokens per model per day between ``start`` and ``end`` (inclusive) for ``user`` (everyone when
    None), training tokens and cost per task, and the totals. Aggregated in the database."""
    calls = ApiCall.objects.filter(created_at__date__gte=start, created_at__date__lte=end)
    jobs = FineTuningJob.objects.filter(
        status=JobStatus.SUCCEEDED, finished_at__date__gte=start, finished_at__date__lte=end
    )
    if user is not None:
        calls, jobs = calls.filter(user=user), jobs.filter(owner=user)
    group = ["day", "model"] if user is not None else ["day", "user__username", "model"]
    rows = list(
        calls.annotate(day=TruncDate("created_at"))
        .values(*group)
        .annotate(
            calls=Count("id"),
            errors=Count("id", filter=~Q(status_code=200)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by("-day", *group[1:])
    )
    prices = _prices({r["model"] for r in rows})
    for r in rows:
        r["tokens"] = r["prompt_tokens"] + r["completion_tokens"]
        r["cost"] = _cost(r["tokens"], prices[r["model"]])
    per_day: dict[dt.date, dict] = defaultdict(lambda: {"calls": 0, "tokens": 0})
    for r in rows:
        per_day[r["day"]]["calls"] += r["calls"]
        per_day[r["day"]]["tokens"] += r["tokens"]
    tasks = list(
        jobs.values(
            "public_id",
            "fine_tuned_model",
            "base_model__code",
            "finished_at",
            "trained_tokens",
            "actual_cost",
            "owner__username",
        ).order_by("-finished_at")
    )
    totals = {
        "calls": sum(r["calls"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
        "inference_cost": sum((r["cost"] for r in rows), Decimal("0.0000")),
        "training_tokens": sum(t["trained_tokens"] or 0 for t in tasks),
        "training_cost": sum((t["actual_cost"] or Decimal(0) for t in tasks), Decimal("0.0000")),
    }
    totals["cost"] = totals["inference_cost"] + totals["training_cost"]
    return {"start": start, "end": end, "rows": rows, "tasks": tasks, "totals": totals, "per_day": dict(per_day)}


def usage_chart(*, report: dict) -> dict | None:
    """Bars of tokens per day over the period, drawn on the server as SVG coordinates (as jobs/charts.py)."""
    from jobs.charts import nice_step

    start, end = report["start"], report["end"]
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    if not report["rows"] or len(days) > 400:
        return None
    width, height, left, bottom, top = 900, 200, 56, 24, 10
    peak = max(v["tokens"] for v in report["per_day"].values()) or 1
    step = nice_step(peak)
    high = step * -(-peak // step)
    slot = (width - left - 8) / len(days)
    bars = []
    for i, day in enumerate(days):
        value = report["per_day"].get(day, {}).get("tokens", 0)
        h = (height - bottom - top) * value / high
        bars.append(
            {
                "x": round(left + i * slot + slot * 0.1, 1),
                "y": round(height - bottom - h, 1),
                "w": round(max(slot * 0.8, 1), 1),
                "h": round(h, 1),
                "day": day,
                "tokens": value,
                "label": day.strftime("%m-%d") if len(days) <= 14 or i % max(1, len(days) // 7) == 0 else "",
            }
        )
    ticks = []
    value = 0.0
    while value <= high + 1e-9:
        ticks.append(
            {"y": round(height - bottom - (height - bottom - top) * value / high, 1), "label": f"{int(value):,}"}
        )
        value += step
    return {
        "width": width,
        "height": height,
        "left": left,
        "bars": bars,
        "ticks": ticks,
        "base_y": height - bottom,
        "label_y": height - 6,
    }
