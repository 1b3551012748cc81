"""Evaluations that answer the question (issue 19, item 5): the verdict's rules and intervals, the judge's replies
read robustly, checkpoints and the general prompts, cancel, the periodic repair, the evaluation.completed webhook,
and who may see, run and cancel an evaluation.

The model calls stand in at ``experience.services.chat_complete`` (the gateway's far side: model servers), with
answers chosen per model code; tests/test_experience_live.py runs the same code through real pool instances."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from experience import services
from experience import verdict as v
from experience.models import Evaluation, EvaluationAnswer, EvaluationItem
from experience.webhooks import webhook_evaluation
from jobs.models import FineTuningJob
from modelcards.models import BaseModel, FineTunedModel
from notifications.models import OutboxMessage, WebhookEndpoint
from notifications.webhooks import WEBHOOK_EVENTS

from .jobs_support import chat_lines, make_card, make_dataset

# ---------------------------------------------------------------- pure functions


def test_wilson_interval_and_t_interval():
    low, high = v.wilson(18, 20)
    assert (round(low, 2), round(high, 2)) == (0.70, 0.97)
    assert v.wilson(0, 0) == (0.0, 1.0)
    low, high = v.wilson(10, 20)
    assert low < 0.5 < high and high - 0.5 == pytest.approx(0.5 - low)
    mean, low, high = v.mean_interval([1.0, 2.0, 3.0])  # sd 1, t(2) = 4.303
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / 3**0.5)
    assert v.mean_interval([0.5]) is None


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("8", 8),
        ("Score: 7/10", 7),
        ("**9**", 9),
        ("4/5", 8.2),
        ("0.8", 8.2),
        ("10.", 10),
        ("no idea", None),
        ("", None),
        (None, None),
        (" tok0 tok1 tok2", None),
        ("15", None),
        ("I'd say 6 out of 10", 6),
    ],
)
def test_judge_scores_are_read_robustly(reply, score):
    assert v.parse_score(reply) == (pytest.approx(score) if score is not None else None)


@pytest.mark.parametrize(
    ("reply", "choice"),
    [
        ("A", "A"),
        ("[[B]]", "B"),
        ("Tie.", "tie"),
        ("Answer B is better.", "B"),
        ("  **A**", "A"),
        ("Both are equal", "tie"),
        ("a good answer", None),
        ("tok0 tok1", None),
        ("", None),
    ],
)
def test_pairwise_choices_are_read_robustly(reply, choice):
    assert v.parse_choice(reply) == choice


def test_a_pairwise_win_needs_both_orders_to_agree():
    # First call: the fine-tune is answer A; second: the base is answer A.
    assert v.pair_outcome("A", "B") == "win"
    assert v.pair_outcome("B", "A") == "loss"
    assert v.pair_outcome("A", "A") == "tie"  # the judge picked a position, not an answer
    assert v.pair_outcome("tie", "B") == "tie"
    assert v.pair_outcome(None, "B") is None and v.pair_outcome("A", None) is None


def test_verdict_with_a_judge_better_same_worse_and_not_measurable():
    better = v.main_verdict(pairwise=v.Pairwise(wins=18, losses=2), f1_base=[], f1_tune=[])
    assert better.kind == "better" and better.n == 20
    assert better.text == "Better than base on 18 of 20 prompts (win rate 0.90, 95% CI 0.70–0.97)"
    same = v.main_verdict(pairwise=v.Pairwise(wins=8, losses=8, ties=4), f1_base=[], f1_tune=[])
    assert same.kind == "same" and same.text.startswith("No better than base: won 8, lost 8 of 20 prompts")
    worse = v.main_verdict(pairwise=v.Pairwise(wins=1, losses=15, ties=2), f1_base=[], f1_tune=[])
    assert worse.kind == "worse" and worse.text.startswith("Worse than base on 15 of 18 prompts")
    one = v.main_verdict(pairwise=v.Pairwise(wins=1), f1_base=[0.0], f1_tune=[1.0])
    assert (one.kind, one.text) == ("unmeasurable", "Not measurable: 1 prompt")
    # Judged too few to measure (the other replies unreadable): the F1 difference over all of them decides.
    f1 = v.main_verdict(pairwise=v.Pairwise(wins=2, unjudged=4), f1_base=[0.1] * 6, f1_tune=[0.9, 0.8, 1, 0.7, 0.9, 1])
    assert f1.kind == "better" and f1.n == 6 and "F1 0.10 → 0.88" in f1.text


def test_verdict_without_a_judge_uses_the_paired_f1_difference():
    base, tune = [0.2, 0.1, 0.3, 0.2, 0.1, 0.2], [0.9, 0.8, 1.0, 0.7, 0.9, 1.0]
    better = v.main_verdict(pairwise=None, f1_base=base, f1_tune=tune)
    assert better.kind == "better" and better.text.startswith("Better than base on 6 of 6 prompts (F1 0.18 → 0.88")
    assert better.low > 0
    same = v.main_verdict(pairwise=None, f1_base=[0.5, 0.1, 0.9, 0.3, 0.6], f1_tune=[0.1, 0.5, 0.3, 0.9, 0.6])
    assert same.kind == "same" and same.low < 0 < same.high
    assert v.main_verdict(pairwise=None, f1_base=[0.1], f1_tune=[0.9]).text == "Not measurable: 1 prompt"
    assert v.main_verdict(pairwise=None, f1_base=[], f1_tune=[]).text == "Not measurable: 0 prompts"


def test_regression_check_and_the_one_line_verdict():
    main = v.main_verdict(pairwise=v.Pairwise(wins=18, losses=2), f1_base=[], f1_tune=[])
    fine = v.regression_verdict(pairwise=v.Pairwise(wins=4, losses=4, ties=12), f1_base=[], f1_tune=[])
    assert fine["kind"] == "ok"
    line = v.verdict(main=main, regression=fine)
    assert line.text.startswith(
        "Better than base on 18 of 20 prompts (win rate 0.90, 95% CI 0.70–0.97); no regression on 20 general prompts"
    )
    forgot = v.regression_verdict(pairwise=v.Pairwise(wins=0, losses=15, ties=5), f1_base=[], f1_tune=[])
    assert forgot["kind"] == "regressed"
    line = v.verdict(main=main, regression=forgot)
    assert line.text.startswith("Regressed: worse than base on 15 of 20 general prompts")
    assert "; better than base on 18 of 20 prompts" in line.text and line.regression["kind"] == "regressed"
    by_f1 = v.regression_verdict(pairwise=None, f1_base=[0.9] * 6, f1_tune=[0.1, 0.2, 0.0, 0.1, 0.3, 0.2])
    assert by_f1["kind"] == "regressed" and "6 of 6 general prompts" in by_f1["text"]
    few = v.regression_verdict(pairwise=None, f1_base=[1.0], f1_tune=[0.0])
    assert few["kind"] == "unmeasurable" and few["text"] == "regression not measurable: 1 prompt"


def test_best_model_is_the_highest_judge_score_else_f1_never_the_base():
    means = [
        {"code": "base", "role": "base", "f1": 0.99, "judge": 9.9},
        {"code": "c1", "role": "checkpoint", "f1": 0.7, "judge": 8.0},
        {"code": "c2", "role": "checkpoint", "f1": 0.9, "judge": 6.0},
        {"code": "r", "role": "result", "f1": 0.8, "judge": 7.0},
    ]
    assert v.best_model(means) == "c1"
    assert v.best_model([{**m, "judge": None} for m in means]) == "c2"
    assert v.best_model([{**m, "judge": None, "f1": 0.5} for m in means]) == "r"  # a tie goes to the later one


# ---------------------------------------------------------------- runs


def _task(user, tag: str, validation: int = 6) -> tuple[FineTuningJob, FineTunedModel]:
    job = FineTuningJob.objects.create(
        owner=user,
        base_model=BaseModel.objects.earliest("pk"),
        training_dataset=make_dataset(user, chat_lines(20)),
        validation_dataset=make_dataset(user, chat_lines(validation), name="val"),
        suffix="bot",
        fine_tuned_model=f"ft:base:bot:{tag}",
        status="succeeded",
    )
    return job, make_card(job)


def _checkpoint(card: FineTunedModel, step: int) -> FineTunedModel:
    return FineTunedModel.objects.create(
        code=f"{card.code}:ckpt-step-{step}",
        owner=card.owner,
        base_model=card.base_model,
        method=card.method,
        training_type=card.training_type,
        path=card.path,
        checkpoint_of=card,
        epoch=step // 3,
        step=step,
    )


GENERAL = {
    json.loads(line)["messages"][0]["content"]: json.loads(line)["messages"][1]["content"]
    for line in (services.REGRESSION_DIR / "default.jsonl").read_text().splitlines()
}


class Models:
    """The far side of the gateway: each code answers as a model of that quality would. The judge (the base
    model's code, by request id) scores an answer 9 when it holds the reference, else 3, and prefers the answer
    that holds it; on one prompt it babbles (no number, no choice)."""

    def __init__(self, card: FineTunedModel):
        self.card = card
        self.calls: list[str] = []

    def __call__(self, *, user, body, wanted=None):
        self.calls.append(body["request_id"])
        assert user == self.card.owner and body["temperature"] == 0.0
        if "-judge-" in body["request_id"] or "-pair-" in body["request_id"]:
            return self.judge(body)
        question = body["messages"][-1]["content"]
        code = body["model"]
        if question in GENERAL:  # general prompts: the base knows them, the fine-tune forgot
            text = GENERAL[question] if code == self.card.base_model.code else "Widget 0 is red."
        elif code == self.card.code:
            text = "Widget {} is {}.".format(*self._widget(question))
        elif code.endswith(":ckpt-step-3"):
            text = f"Widget {self._widget(question)[0]} is"
        else:
            text = "I do not know."
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}

    @staticmethod
    def _widget(question: str) -> tuple[int, str]:
        i = int(question.rstrip("?").split()[-1])
        return i, ["red", "green", "blue", "amber"][i % 4]

    def judge(self, body):
        user = body["messages"][-1]["content"]
        reference = user.split("Reference answer:\n")[1].split("\n\n")[0]
        if "What colour is widget 5?" in user:
            text = "tok0 tok1 tok2"
        elif "Answer to score:" in user:
            text = "Score: 9/10" if reference in user.split("Answer to score:")[1] else "3"
        else:
            first = user.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
            text = "A" if reference in first else "B"
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_an_evaluation_with_checkpoints_a_judge_and_general_prompts(alice, monkeypatch):
    job, card = _task(alice, "j1")
    later, earlier = _checkpoint(card, 6), _checkpoint(card, 3)
    gone = _checkpoint(card, 9)
    FineTunedModel.objects.filter(pk=gone.pk).update(deleted_at=timezone.now())  # a deleted one is not asked
    WebhookEndpoint.objects.create(
        user=alice, url="https://example.com/hook", events=["evaluation.completed"], secret="whsec_" + "A" * 44
    )
    models = Models(card)
    monkeypatch.setattr(services, "chat_complete", models)
    evaluation = services.evaluation_start(job=job, judge_model=card.base_model.code)
    assert evaluation.rubric == services.default_rubric() and evaluation.regression == "default"

    assert services.evaluation_run(evaluation=evaluation) == "succeeded"
    evaluation.refresh_from_db()
    assert evaluation.status == "succeeded" and evaluation.total == evaluation.done == 6 + 20
    assert [m["code"] for m in evaluation.evaluated] == [card.base_model.code, earlier.code, later.code, card.code]
    summary = evaluation.summary
    means = {m["code"]: m for m in summary["models"]}
    assert means[card.code]["f1"] == 1.0 and means[card.base_model.code]["f1"] < 0.3
    # The judge babbled on one prompt: its four answers have no score, counted, and the pair is not judged.
    assert means[card.code]["judge"] == 9 and means[card.code]["judged"] == 5 and means[card.code]["unscored"] == 1
    assert summary["pairwise"] == {**summary["pairwise"], "wins": 5, "losses": 0, "ties": 0, "unjudged": 1}
    assert summary["best"] == card.code
    assert summary["general_pairwise"]["losses"] == 20
    text = summary["verdict"]["text"]
    assert text.startswith("Regressed: worse than base on 20 of 20 general prompts"), text
    assert "; better than base on 5 of 5 prompts (win rate 1.00, 95% CI 0.57–1.00)" in text
    # Every answer and every judgement is a call of the owner's (the gateway records it in usage).
    task_calls = 6 * 4 + 6 * 4 + 6 * 2  # answers, their scores (babble included), two pairwise each
    assert len(models.calls) == task_calls + 20 * 2 + 20 * 2
    babble = EvaluationItem.objects.get(evaluation=evaluation, index=5)
    assert babble.pair == "" and babble.pair_replies == ["tok0 tok1 tok2", "tok0 tok1 tok2"]
    assert EvaluationAnswer.objects.filter(item=babble, judge_score__isnull=True).count() == 4
    # The owner is told, and the webhook endpoint that asked for the event gets it.
    hook = OutboxMessage.objects.get(user=alice, channel="webhook")
    payload = json.loads(hook.body)
    assert payload["type"] == "evaluation.completed" and payload["data"]["id"] == f"eval-{evaluation.pk}"
    assert payload["data"]["verdict"]["text"] == text and payload["data"]["best_model"] == card.code
    # Every prompt asked, and apart: the task's own (the verdict's n, the compare page's) and the general ones.
    data = payload["data"]
    assert (data["prompts"], data["task_prompts"], data["general_prompts"]) == (26, 6, 20)
    assert evaluation.task_prompts == 6 and evaluation.general_prompts == 20
    assert OutboxMessage.objects.filter(user=alice, channel="in_app", event="evaluation.completed").exists()


def test_without_a_judge_the_verdict_rests_on_f1_and_no_general_prompts_when_none(alice, monkeypatch):
    job, card = _task(alice, "f1", validation=8)
    monkeypatch.setattr(services, "chat_complete", Models(card))
    evaluation = services.evaluation_start(job=job, regression="none")
    assert services.evaluation_run(evaluation=evaluation) == "succeeded"
    evaluation.refresh_from_db()
    assert evaluation.total == 8 and evaluation.summary["best"] is None  # no checkpoints: nothing to choose
    data = webhook_evaluation(f"eval-{evaluation.pk}")  # the webhook's data: no general prompts asked
    assert (data["prompts"], data["task_prompts"], data["general_prompts"]) == (8, 8, 0)
    assert evaluation.summary["verdict"]["text"].startswith("Better than base on 8 of 8 prompts (F1 0.00 → 1.00")
    assert evaluation.base_f1 == 0.0 and evaluation.tune_f1 == 1.0


def test_one_prompt_is_not_measurable_and_the_card_says_so(client, alice, monkeypatch):
    job, card = _task(alice, "one", validation=1)
    monkeypatch.setattr(services, "chat_complete", Models(card))
    evaluation = services.evaluation_start(job=job, regression="none")
    services.evaluation_run(evaluation=evaluation)
    client.force_login(alice)
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="evaluation-verdict"' in page and "Not measurable: 1 prompt" in page


def test_a_user_dataset_as_the_general_prompts(alice, monkeypatch):
    job, card = _task(alice, "own")
    own = make_dataset(
        alice,
        [
            {
                "messages": [
                    {"role": "user", "content": "What is the capital of Japan?"},
                    {"role": "assistant", "content": "Tokyo"},
                ]
            }
        ],
        name="general",
    )
    monkeypatch.setattr(services, "chat_complete", Models(card))
    evaluation = services.evaluation_start(job=job, regression="dataset", regression_dataset=own)
    services.evaluation_run(evaluation=evaluation)
    evaluation.refresh_from_db()
    assert evaluation.total == 7 and "general" in evaluation.regression_source
    assert evaluation.summary["verdict"]["regression"]["kind"] == "unmeasurable"


def test_cancel_stops_a_running_evaluation_between_prompts(alice, monkeypatch):
    job, card = _task(alice, "c1")
    models = Models(card)

    def cancelling(**kwargs):
        if kwargs["body"]["request_id"].startswith(f"eval-{evaluation.pk}-2-"):
            services.evaluation_cancel(evaluation=evaluation)
        return models(**kwargs)

    monkeypatch.setattr(services, "chat_complete", cancelling)
    evaluation = services.evaluation_start(job=job)
    assert services.evaluation_run(evaluation=evaluation) == "stopped"
    evaluation.refresh_from_db()
    # The prompt under way when it was cancelled is not saved, and no later one is asked.
    assert evaluation.status == "cancelled" and evaluation.is_final and evaluation.done == 2
    assert sorted(evaluation.items.values_list("index", flat=True)) == [0, 1]
    assert not any(c.startswith(f"eval-{evaluation.pk}-3-") for c in models.calls)
    assert services.evaluation_cancel(evaluation=evaluation) is False  # already ended
    queued = services.evaluation_start(job=job)
    assert services.evaluation_cancel(evaluation=queued) is True
    assert services.evaluation_run(evaluation=queued) == "skip"


def test_repair_requeues_a_stale_evaluation_once_then_fails_it_with_the_reason(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    job, card = _task(alice, "r1")
    stale = timezone.now() - timedelta(minutes=10)
    evaluation = Evaluation.objects.create(
        job=job, model=card, status="running", attempts=1, heartbeat_at=stale, regression="none"
    )
    fresh_job, fresh_card = _task(alice, "r2")
    fresh = Evaluation.objects.create(
        job=fresh_job, model=fresh_card, status="running", attempts=1, heartbeat_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        counts = services.evaluations_repair(heartbeat_timeout=300)
    assert counts["requeued"] == 1 and len(callbacks) == 1  # sent to a worker once the requeue commits
    evaluation.refresh_from_db()
    fresh.refresh_from_db()
    assert evaluation.status == "queued" and fresh.status == "running"

    # Requeued, it goes on from the first prompt not saved (two were, before its worker died).
    models = Models(card)
    for index, (messages, reference) in enumerate(services.evaluation_prompts(job=job)[0][:2]):
        EvaluationItem.objects.create(evaluation=evaluation, index=index, messages=messages, reference=reference)

    def dies(**kwargs):  # the second worker dies too, after one more prompt
        if kwargs["body"]["request_id"].startswith(f"eval-{evaluation.pk}-3-"):
            raise KeyboardInterrupt
        return models(**kwargs)

    monkeypatch.setattr(services, "chat_complete", dies)
    with pytest.raises(KeyboardInterrupt):
        services.evaluation_run(evaluation=evaluation)
    assert not any(c.startswith((f"eval-{evaluation.pk}-0-", f"eval-{evaluation.pk}-1-")) for c in models.calls)
    evaluation.refresh_from_db()
    assert evaluation.status == "running" and evaluation.attempts == 2 and evaluation.done == 3
    Evaluation.objects.filter(pk=evaluation.pk).update(heartbeat_at=stale)
    assert services.evaluations_repair(heartbeat_timeout=300)["failed"] == 1
    evaluation.refresh_from_db()
    assert evaluation.status == "failed" and evaluation.error == "Its worker stopped (no progress for 5 minutes)."
    fresh.refresh_from_db()
    assert fresh.status == "running"


def test_a_worker_whose_evaluation_another_worker_took_over_saves_nothing_more(alice, monkeypatch):
    job, card = _task(alice, "t1")
    models = Models(card)

    def taken_over(**kwargs):  # the repair requeued it and a second worker claimed it, mid-prompt
        if kwargs["body"]["request_id"].startswith(f"eval-{evaluation.pk}-1-"):
            Evaluation.objects.filter(pk=evaluation.pk).update(attempts=2)
        return models(**kwargs)

    monkeypatch.setattr(services, "chat_complete", taken_over)
    evaluation = services.evaluation_start(job=job, regression="none")
    assert services.evaluation_run(evaluation=evaluation) == "stopped"
    evaluation.refresh_from_db()
    assert evaluation.status == "running" and evaluation.done == 1  # the second worker's to finish
    assert list(evaluation.items.values_list("index", flat=True)) == [0]


def test_only_the_owner_sees_runs_and_cancels_an_evaluation(client, alice, bob):
    job, card = _task(alice, "o1")
    evaluation = services.evaluation_start(job=job)
    base = f"/console/playground/evaluations/{card.code}/"
    client.force_login(bob)
    assert client.get(base).status_code == 404
    assert client.post(base + "run/").status_code == 404
    assert client.post(base + "cancel/").status_code == 404
    assert "card-evaluation" not in client.get(f"/console/models/{card.code}/").content.decode()
    evaluation.refresh_from_db()
    assert evaluation.status == "queued"
    client.force_login(alice)
    page = client.get(base).content.decode()
    assert 'data-testid="evaluation-cancel"' in page and 'data-testid="evaluation-progress"' in page
    page = client.post(base + "cancel/", HTTP_HX_REQUEST="true").content.decode()
    evaluation.refresh_from_db()
    assert evaluation.status == "cancelled" and 'data-testid="evaluation-cancelled"' in page
    assert 'data-testid="evaluation-run"' in page and 'data-testid="evaluation-cancel"' not in page


def test_the_run_again_form_offers_callable_judges_and_refuses_others(client, alice, bob):
    job, card = _task(alice, "form")
    _, bobs = _task(bob, "bobs")
    client.force_login(alice)
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert f'<option value="{card.code}">' in page and bobs.code not in page
    assert services.default_rubric()[:40] in page  # the rubric, prefilled
    url = f"/console/playground/evaluations/{card.code}/run/"
    refused = client.post(url, {"judge_model": bobs.code, "regression": "default"}, HTTP_HX_REQUEST="true")
    assert 'data-testid="evaluation-form-error"' in refused.content.decode()
    assert not Evaluation.objects.filter(model=card).exists()
    # The gateway's own resolution decides (as for the API): another's model or an unknown code is refused.
    with pytest.raises(services.JudgeInvalid, match="does not exist|not found|No such|not exist"):
        services.judge_check(user=alice, code=bobs.code)
    with pytest.raises(services.JudgeInvalid):
        services.judge_check(user=alice, code="no-such-model")
    started = client.post(url, {"judge_model": card.code, "rubric": "Be kind.", "regression": "none"})
    assert started.status_code == 302
    evaluation = Evaluation.objects.get(model=card)
    assert (evaluation.judge_model, evaluation.rubric, evaluation.regression) == (card.code, "Be kind.", "none")
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="evaluation-queued"' in page and 'data-testid="evaluation-cancel"' in page


def test_the_completed_event_is_offered_to_webhook_endpoints():
    event = WEBHOOK_EVENTS["evaluation.completed"]
    assert event.notification == "evaluation.completed" and event.kind == "evaluation"


def test_evaluations_made_before_answers_had_rows_are_moved_into_rows(client, alice):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("experience.migrations.0002_evaluation_answers_judge_regression")
    job, card = _task(alice, "old")
    old = Evaluation.objects.create(
        job=job,
        model=card,
        status="succeeded",
        total=1,
        done=1,
        base_f1=0.0,
        tune_f1=1.0,
        base_exact=0.0,
        tune_exact=1.0,
        source="validation set val",
    )
    EvaluationItem.objects.create(
        evaluation=old,
        index=0,
        messages=[{"role": "user", "content": "Widget 1?"}],
        reference="Widget 1 is green.",
        base_answer="I do not know.",
        tune_answer="Widget 1 is green.",
        tune_f1=1.0,
        tune_exact=1.0,
    )
    migration.answers_of_old_evaluations(apps, None)
    old.refresh_from_db()
    assert old.evaluated == [
        {"code": card.base_model.code, "role": "base", "step": None},
        {"code": card.code, "role": "result", "step": None},
    ]
    assert sorted(EvaluationAnswer.objects.filter(item__evaluation=old).values_list("role", "answer", "f1")) == [
        ("base", "I do not know.", 0.0),
        ("result", "Widget 1 is green.", 1.0),
    ]
    client.force_login(alice)
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert "I do not know." in page and "<strong>0.00</strong> → fine-tune <strong>1.00</strong>" in page
    assert "<strong>Not measurable: 1 prompt</strong>" in page  # its verdict, from the answers it kept
