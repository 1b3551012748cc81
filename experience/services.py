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
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from common.charts import Frame, nice_step
from common.queueing import enqueue, enqueue_on_commit
from common.states import StateMachine
from deployments import gateway
from deployments.models import ApiCall, Deployment, DeploymentStatus
from jobs.models import FineTuningJob, JobStatus
from modelcards.models import BaseModel, FineTunedModel
from modelcards.pricing import token_cost

from . import verdict as verdicts
from .models import ACTIVE_STATUSES, Evaluation, EvaluationAnswer, EvaluationItem, EvaluationStatus

E = EvaluationStatus
# Every change of Evaluation.status goes through this table, in this module (its only writer), each a
# compare-and-set: a worker claims a queued run, the repair queues a stalled one again (once) or fails it.
EVALUATION = StateMachine(
    Evaluation,
    {
        E.QUEUED: {E.RUNNING, E.CANCELLED},
        E.RUNNING: {E.SUCCEEDED, E.FAILED, E.CANCELLED, E.QUEUED},
        E.SUCCEEDED: set(),
        E.FAILED: set(),
        E.CANCELLED: set(),
    },
)

logger = logging.getLogger(__name__)

EVAL_LIMIT = 50
EVAL_MAX_ATTEMPTS = 2  # a worker lost once: queued again; twice: failed


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
        reply = _loop.run_until_complete(gateway.handle("POST", raw, None, user=user))
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
        out.append(
            {
                "code": m.code,
                "label": m.display_name,
                "kind": "base",
                "base": "",
                "disabled": not serve,
                "reason": "" if serve else serve.reason,
            }
        )
    tuned = FineTunedModel.objects.live().filter(owner=user).select_related("base_model")
    out += [  # results first, then each one's checkpoints
        {
            "code": m.code,
            "label": m.code,
            "kind": "checkpoint" if m.is_checkpoint else "fine-tune",
            "base": m.base_model.code,
        }
        for m in sorted(tuned, key=lambda m: m.is_checkpoint)
    ]
    out += [
        {"code": d.code, "label": d.code, "kind": "deployment", "base": ""}
        for d in Deployment.objects.owned_by(user).filter(status=DeploymentStatus.RUNNING)
    ]
    kinds = {
        "base": _("base"),
        "fine-tune": _("fine-tune"),
        "checkpoint": _("checkpoint"),
        "deployment": _("deployment"),
    }
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

REGRESSION_DIR = Path(__file__).resolve().parent / "regression"
REGRESSION_LIMIT = 50
JUDGE_POINTWISE = (
    "Score the answer to score against the reference answer, from 1 (wrong or useless) to 10 (as good as the "
    "reference, or better). Reply with the number only."
)
JUDGE_PAIRWISE = (
    "Two answers to the same prompt follow, answer A and answer B. Which one is better? Reply with A, B or tie only."
)


def default_rubric() -> str:
    """The rubric a judge is given unless the user wrote another (experience/regression/rubric.txt)."""
    return (REGRESSION_DIR / "rubric.txt").read_text(encoding="utf-8").strip()


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


def regression_prompts(*, evaluation: Evaluation) -> tuple[list[tuple[list[dict], str]], str]:
    """The general prompts the fine-tune is compared with its base on (to catch forgetting): the default set
    shipped in experience/regression/, or the owner's own dataset; none when the user chose none."""
    if evaluation.regression == "none":
        return [], ""
    if evaluation.regression == "dataset":
        from datasets.services import dataset_iter_examples

        dataset = evaluation.regression_dataset
        if dataset is None:
            return [], ""
        examples = list(dataset_iter_examples(dataset=dataset))
        source = _("your dataset %(name)s") % {"name": dataset.name}
    else:
        lines = (REGRESSION_DIR / "default.jsonl").read_text(encoding="utf-8").splitlines()
        examples = [json.loads(line) for line in lines if line.strip()]
        source = _("the default general prompts")
    pairs = [p for p in (_prompt_and_reference(e) for e in examples) if p]
    return pairs[:REGRESSION_LIMIT], source


def evaluation_models(*, card: FineTunedModel) -> list[dict]:
    """What an evaluation of ``card`` answers with: its base model, each live checkpoint by step, the result."""
    checkpoints = card.checkpoints.filter(deleted_at__isnull=True).order_by("step", "pk")
    return (
        [{"code": card.base_model.code, "role": "base", "step": None}]
        + [{"code": c.code, "role": "checkpoint", "step": c.step} for c in checkpoints]
        + [{"code": card.code, "role": "result", "step": None}]
    )


class JudgeInvalid(ValueError):
    """The judge model cannot be called by this user (the gateway's own reason)."""


def judge_check(*, user, code: str) -> None:
    """Refuse a judge the user cannot call, as the gateway would resolve it (a model still starting is fine)."""
    try:
        gateway.resolve(user, code)
    except gateway.ApiError as exc:
        if exc.status != 503:
            raise JudgeInvalid(exc.message) from None


def evaluation_start(
    *,
    job: FineTuningJob,
    judge_model: str = "",
    rubric: str = "",
    regression: str = "default",
    regression_dataset=None,
) -> Evaluation | None:
    """Queue an evaluation of a succeeded task (a re-run starts a new one). None if the task has no live card or
    one is already under way. ``regression``: "default", "none" or "dataset" (``regression_dataset``)."""
    card = job.result
    if job.status != JobStatus.SUCCEEDED or card is None or card.deleted_at is not None:
        return None
    if card.modality != "text":
        return None
    if regression == "dataset" and regression_dataset is None:
        regression = "default"
    with transaction.atomic():
        if Evaluation.objects.filter(job=job, status__in=ACTIVE_STATUSES).exists():
            return None
        evaluation = Evaluation.objects.create(
            job=job,
            model=card,
            judge_model=judge_model,
            rubric=(rubric.strip() or default_rubric()) if judge_model else "",
            regression=regression,
            regression_dataset=regression_dataset if regression == "dataset" else None,
        )
        enqueue_on_commit("experience.evaluate", evaluation.pk)  # lost: evaluations_repair sends it again
    return evaluation


def evaluation_cancel(*, evaluation: Evaluation) -> bool:
    """Stop a queued or running evaluation; a running one stops before its next prompt. False if it had ended."""
    return bool(
        EVALUATION.move(evaluation, ACTIVE_STATUSES, E.CANCELLED, finished_at=timezone.now(), error=_("Cancelled."))
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _conversation(messages: list[dict]) -> str:
    return "\n".join(f"{m.get('role', 'user')}: {_text(m.get('content'))}" for m in messages)


class _Run:
    """One worker's pass over an evaluation: its claim (the attempt number), its calls and its heartbeat."""

    def __init__(self, evaluation: Evaluation, attempt: int):
        self.evaluation = evaluation
        self.attempt = attempt
        self.owner = evaluation.job.owner
        self.max_tokens = settings.EVALUATION_MAX_TOKENS
        self.judge_tokens = settings.EVALUATION_JUDGE_MAX_TOKENS

    def mine(self) -> bool:
        """Still running under this worker's claim (not cancelled, deleted, or requeued by the repair)."""
        return Evaluation.objects.filter(
            pk=self.evaluation.pk, status=EvaluationStatus.RUNNING, attempts=self.attempt
        ).exists()

    def beat(self) -> bool:
        return bool(
            Evaluation.objects.filter(
                pk=self.evaluation.pk, status=EvaluationStatus.RUNNING, attempts=self.attempt
            ).update(heartbeat_at=timezone.now())
        )

    def wanted(self) -> bool:  # asked before each wait for a starting pool: a sign of life too
        return self.beat()

    def ask(self, code: str, messages: list[dict], max_tokens: int, request_id: str) -> tuple[str, str]:
        """The model's answer (or "") and the error (or "")."""
        body = {
            "model": code,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "request_id": request_id,
        }
        try:
            data = chat_complete(user=self.owner, body=body, wanted=self.wanted)
            return _text(data["choices"][0]["message"].get("content")), ""
        except (CallFailed, KeyError, IndexError, TypeError) as exc:
            return "", f"{code}: {exc}"
        finally:
            self.beat()

    def judge_score(self, messages, reference, answer, rid) -> tuple[float | None, str]:
        system = f"{self.evaluation.rubric}\n\n{JUDGE_POINTWISE}"
        user = f"Prompt:\n{_conversation(messages)}\n\nReference answer:\n{reference}\n\nAnswer to score:\n{answer}"
        reply, error = self.ask(
            self.evaluation.judge_model,
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            self.judge_tokens,
            rid,
        )
        return verdicts.parse_score(reply), reply or error

    def judge_pair(self, messages, reference, first, second, rid) -> tuple[str | None, str]:
        system = f"{self.evaluation.rubric}\n\n{JUDGE_PAIRWISE}"
        user = (
            f"Prompt:\n{_conversation(messages)}\n\nReference answer:\n{reference or '(none)'}\n\n"
            f"Answer A:\n{first}\n\nAnswer B:\n{second}"
        )
        reply, error = self.ask(
            self.evaluation.judge_model,
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            self.judge_tokens,
            rid,
        )
        return verdicts.parse_choice(reply), reply or error

    def prompt(self, index: int, kind: str, messages: list[dict], reference: str, models: list[dict]) -> bool:
        """Answer one prompt with every model, score the answers, judge them, and save it all at once; False if
        the evaluation stopped being this worker's meanwhile (nothing saved)."""
        ev = self.evaluation
        rid = f"eval-{ev.pk}-{index}"
        answers = []
        for model in models:
            text, error = self.ask(model["code"], messages, self.max_tokens, f"{rid}-{model['role']}")
            answer = EvaluationAnswer(
                code=model["code"],
                role=model["role"],
                answer=text,
                error=error,
                exact=exact_match(text, reference),
                f1=token_f1(text, reference),
            )
            if ev.judge_model and kind == EvaluationItem.Kind.TASK and text:
                answer.judge_score, answer.judge_reply = self.judge_score(
                    messages, reference, text, f"{rid}-judge-{model['role']}"
                )
            answers.append(answer)
        item = EvaluationItem(
            evaluation=ev,
            index=index,
            kind=kind,
            messages=messages,
            reference=reference,
            error="; ".join(a.error for a in answers if a.error),
        )
        base, tune = answers[0], answers[-1]
        if ev.judge_model and base.answer and tune.answer:
            tune_first, reply_1 = self.judge_pair(messages, reference, tune.answer, base.answer, f"{rid}-pair-1")
            base_first, reply_2 = self.judge_pair(messages, reference, base.answer, tune.answer, f"{rid}-pair-2")
            item.pair = verdicts.pair_outcome(tune_first, base_first) or ""
            item.pair_replies = [reply_1, reply_2]
        with transaction.atomic():
            # Saved only under this worker's claim, the row locked: once cancelled, or requeued by the repair and
            # claimed by another worker, a late answer of this one is dropped rather than saved twice.
            if (
                not Evaluation.objects.select_for_update()
                .filter(pk=ev.pk, status=EvaluationStatus.RUNNING, attempts=self.attempt)
                .exists()
            ):
                return False
            item.save()
            for answer in answers:
                answer.item = item
            EvaluationAnswer.objects.bulk_create(answers)
            Evaluation.objects.filter(pk=ev.pk).update(done=index + 1, heartbeat_at=timezone.now())
        return True


def evaluation_run(*, evaluation: Evaluation) -> str:
    """Answer every prompt with the base model, each checkpoint and the result (through the pool), score the
    answers (and judge them), then the general prompts with the base and the result; then the verdict. A
    requeued evaluation goes on from the first prompt it had not saved."""
    now = timezone.now()
    if not EVALUATION.move(
        evaluation, [E.QUEUED], E.RUNNING, attempts=F("attempts") + 1, heartbeat_at=now, started_at=now
    ):
        return "skip"
    evaluation.refresh_from_db()
    run = _Run(evaluation, evaluation.attempts)
    job, card = evaluation.job, evaluation.model
    try:
        models = evaluation.evaluated or evaluation_models(card=card)
        task_pairs, source = evaluation_prompts(job=job)
        general_pairs, general_source = regression_prompts(evaluation=evaluation)
        Evaluation.objects.filter(pk=evaluation.pk).update(
            total=len(task_pairs) + len(general_pairs),
            source=source[:200],
            regression_source=general_source[:200],
            evaluated=models,
        )
        evaluation.evaluated = models
        done = set(evaluation.items.values_list("index", flat=True))
        pair_models = [models[0], models[-1]]
        work = [(EvaluationItem.Kind.TASK, p, models) for p in task_pairs]
        work += [(EvaluationItem.Kind.GENERAL, p, pair_models) for p in general_pairs]
        for index, (kind, (messages, reference), asked) in enumerate(work):
            if index in done:
                continue
            if not (run.mine() and run.prompt(index, kind, messages, reference, asked)):
                logger.info("evaluation %s: cancelled or taken over; stopped", evaluation.pk)
                return "stopped"
        summary = evaluation_summary(evaluation=evaluation)
        task = [i for i in evaluation.items.all() if i.kind == EvaluationItem.Kind.TASK]
        if task and all(i.error for i in task) and summary["answered"] == 0:
            raise CallFailed(task[0].error)
        heads = {m["role"]: m for m in summary["models"]}
        with transaction.atomic():
            finished = EVALUATION.move(
                Evaluation.objects.filter(pk=evaluation.pk, attempts=run.attempt),
                [E.RUNNING],
                E.SUCCEEDED,
                finished_at=timezone.now(),
                summary=summary,
                base_exact=heads["base"]["exact"],
                base_f1=heads["base"]["f1"],
                tune_exact=heads["result"]["exact"],
                tune_f1=heads["result"]["f1"],
            )
            if finished:
                _notify_completed(evaluation, summary)
        return "succeeded" if finished else "stopped"
    except NoLongerWanted:
        logger.info("evaluation %s: gone while waiting for the public pool; stopped", evaluation.pk)
        return "gone"
    except Exception as exc:
        logger.exception("evaluation %s failed", evaluation.pk)
        EVALUATION.move(
            Evaluation.objects.filter(pk=evaluation.pk, attempts=run.attempt),
            [E.RUNNING],
            E.FAILED,
            finished_at=timezone.now(),
            error=str(exc)[:2000],
        )
        return "failed"


def _notify_completed(evaluation: Evaluation, summary: dict) -> None:
    """The owner's notification and the webhook event ``evaluation.completed``, in the finishing transaction."""
    from django.urls import reverse

    from notifications.services import notify

    try:
        with transaction.atomic():
            notify(
                user=evaluation.job.owner,
                event="evaluation.completed",
                subject_name=evaluation.model.code,
                subject_code=f"eval-{evaluation.pk}",
                url=reverse("modelcards:detail", args=[evaluation.model.code]),
                context={"model": evaluation.model.code, "verdict": summary["verdict"]["text"]},
            )
    except Exception:  # a notification never undoes the evaluation
        logger.exception("evaluation %s: could not notify", evaluation.pk)


def evaluation_summary(*, evaluation: Evaluation) -> dict:
    """Per-model means, the pairwise counts, the best checkpoint and the verdict, from the stored answers."""
    items = list(evaluation.items.prefetch_related("answers"))
    models = evaluation.evaluated or []
    task = [i for i in items if i.kind == EvaluationItem.Kind.TASK]
    general = [i for i in items if i.kind == EvaluationItem.Kind.GENERAL]
    means = []
    for model in models:
        answers = [a for i in task for a in i.answers.all() if a.code == model["code"]]
        scored = [a.judge_score for a in answers if a.judge_score is not None]
        means.append(
            {
                **model,
                "n": len(answers),
                "exact": _mean([a.exact for a in answers]),
                "f1": _mean([a.f1 for a in answers]),
                "judge": _mean(scored),
                "judged": len(scored),
                "unscored": sum(1 for a in answers if a.judge_score is None and (a.answer or a.judge_reply))
                if evaluation.judge_model
                else 0,
                "errors": sum(1 for a in answers if a.error),
            }
        )

    def paired(rows) -> tuple[list[float], list[float]]:
        base, tune = [], []
        for i in rows:
            by_role = {a.role: a for a in i.answers.all()}
            if "base" in by_role and "result" in by_role and not (by_role["base"].error or by_role["result"].error):
                base.append(by_role["base"].f1)
                tune.append(by_role["result"].f1)
        return base, tune

    judged = bool(evaluation.judge_model)
    task_pairs = verdicts.Pairwise.of([i.pair or None for i in task]) if judged else None
    main = verdicts.main_verdict(pairwise=task_pairs, f1_base=paired(task)[0], f1_tune=paired(task)[1])
    regression = None
    general_pairs = verdicts.Pairwise.of([i.pair or None for i in general]) if judged else None
    if general:
        regression = verdicts.regression_verdict(
            pairwise=general_pairs, f1_base=paired(general)[0], f1_tune=paired(general)[1]
        )
    final = verdicts.verdict(main=main, regression=regression)
    return {
        "models": means,
        "best": verdicts.best_model(means) if len(means) > 2 else None,
        "pairwise": task_pairs.as_dict() if task_pairs else None,
        "general_pairwise": general_pairs.as_dict() if general_pairs and general else None,
        "verdict": final.as_dict(),
        "answered": sum(1 for i in task for a in i.answers.all() if a.answer),
        "general": len(general),
    }


def evaluations_repair(*, heartbeat_timeout: float | None = None) -> dict:
    """Periodic: an evaluation whose worker stopped (no heartbeat for the timeout) is queued again once, to go on
    from its last saved prompt; the second time it is marked failed with the reason. A queued one whose message
    was lost is sent again."""
    timeout = heartbeat_timeout if heartbeat_timeout is not None else float(settings.EVALUATION_HEARTBEAT_TIMEOUT)
    now = timezone.now()
    counts = {"requeued": 0, "failed": 0, "kicked": 0}
    limit = now - dt.timedelta(seconds=timeout)
    for evaluation in Evaluation.objects.filter(status=EvaluationStatus.RUNNING).filter(
        Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, created_at__lt=limit)
    ):
        claim = Evaluation.objects.filter(
            pk=evaluation.pk, heartbeat_at=evaluation.heartbeat_at, attempts=evaluation.attempts
        )
        if evaluation.attempts < EVAL_MAX_ATTEMPTS:
            with transaction.atomic():
                if EVALUATION.move(claim, [E.RUNNING], E.QUEUED):
                    pk = evaluation.pk
                    enqueue_on_commit("experience.evaluate", pk)
                    counts["requeued"] += 1
            continue
        minutes = max(1, round(timeout / 60))
        reason = ngettext(
            "Its worker stopped (no progress for %(n)d minute).",
            "Its worker stopped (no progress for %(n)d minutes).",
            minutes,
        ) % {"n": minutes}
        if EVALUATION.move(claim, [E.RUNNING], E.FAILED, finished_at=now, error=reason):
            counts["failed"] += 1
    waiting = Evaluation.objects.filter(status=EvaluationStatus.QUEUED, created_at__lt=limit)
    if waiting.exists() and _messages_waiting("default") == 0:
        for pk in waiting.values_list("pk", flat=True):
            enqueue("experience.evaluate", pk)
            counts["kicked"] += 1
    return counts


def _messages_waiting(queue: str) -> int:
    """Messages waiting in a Celery queue (a Redis list of that name); 0 if Redis cannot say."""
    from common.redis import redis_client

    try:
        with redis_client(timeout=2) as client:
            return int(client.llen(queue))
    except Exception:
        return 0


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
        r["cost"] = token_cost(r["tokens"], prices[r["model"]])
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
    """Bars of tokens per day over the period, drawn on the server as SVG coordinates (common.charts)."""
    start, end = report["start"], report["end"]
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    if not report["rows"] or len(days) > 400:
        return None
    peak = max(v["tokens"] for v in report["per_day"].values()) or 1
    step = nice_step(peak)
    frame = Frame(900, 200, 56, 8, 10, 24, low=0, high=step * -(-peak // step), x_span=len(days))
    bars = []
    for i, day in enumerate(days):
        value = report["per_day"].get(day, {}).get("tokens", 0)
        label = day.strftime("%m-%d") if len(days) <= 14 or i % max(1, len(days) // 7) == 0 else ""
        bars.append(frame.bar(i, value) | {"day": day, "tokens": value, "label": label})
    return {
        "width": frame.width,
        "height": frame.height,
        "left": frame.pad_left,
        "bars": bars,
        "ticks": frame.y_ticks(step, lambda value: f"{int(value):,}"),
        "base_y": frame.base_y,
        "label_y": frame.height - 6,
    }
