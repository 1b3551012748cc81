"""Experience center, evaluation and usage without live model servers: pages, ownership, the session chat
endpoint (CSRF, the gateway's own errors), scores, the job_succeeded hook, and usage at 10,000+ recorded calls."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone

from deployments.models import ApiCall
from experience import services
from experience.models import Evaluation, EvaluationAnswer, EvaluationItem
from jobs.models import FineTuningJob
from modelcards.models import BaseModel

from .conftest import make_user
from .jobs_support import chat_lines, make_card, make_dataset


def _job(user, tag: str, **extra) -> FineTuningJob:
    return FineTuningJob.objects.create(
        owner=user,
        base_model=BaseModel.objects.earliest("pk"),
        training_dataset=make_dataset(user, chat_lines(20)),
        suffix="bot",
        fine_tuned_model=f"ft:base:bot:{tag}",
        **extra,
    )


def test_scores_exact_match_and_token_f1():
    assert services.exact_match("Widget 3 is red.", "widget 3 is RED") == 1.0
    assert services.exact_match("Widget 3 is blue.", "Widget 3 is red.") == 0.0
    assert services.token_f1("Widget 3 is red.", "Widget 3 is red.") == 1.0
    # 3 of 4 tokens shared each way: precision = recall = 0.75
    assert services.token_f1("Widget 3 is blue", "Widget 3 is red") == pytest.approx(0.75)
    assert services.token_f1("", "something") == 0.0 and services.token_f1("", "") == 1.0


def test_playground_lists_what_the_user_may_call_and_preselects_side_by_side(client, alice, bob):
    job = _job(alice, "p1", status="succeeded")
    card = make_card(job)
    assert client.get("/console/playground/").status_code == 302  # sign in first
    client.force_login(alice)
    page = client.get(f"/console/playground/?model={card.code}").content.decode()
    assert f'<option value="{card.code}" selected>' in page
    assert f'<option value="{card.base_model.code}" selected>' in page  # compare: its base, by default
    assert "Experience center" in page and "playground.js" in page
    client.force_login(bob)
    page = client.get(f"/console/playground/?model={card.code}").content.decode()
    assert f'<option value="{card.code}"' not in page  # bob cannot pick alice's fine-tune


def test_session_chat_endpoint_needs_csrf_and_answers_with_the_gateways_errors(transactional_db, alice, bob):
    """(transactional: the gateway resolves the route on a thread of its own, which sees committed rows only)"""
    job = _job(alice, "c1", status="succeeded")
    card = make_card(job)

    # The URL's view hands the request to the ASGI endpoint (experience/asgi.py), the one that serves it under
    # uvicorn. It is async: the test client drives it with async_to_sync, which refuses a thread whose event loop
    # runs (Playwright's, in a browser test's module). A plain thread has none.
    def scenario():
        browser = Client(enforce_csrf_checks=True)

        def post(**headers):
            return browser.post("/console/playground/chat/", body, content_type="application/json", **headers)

        body = json.dumps({"model": card.code, "messages": [{"role": "user", "content": "hi"}], "stream": True})
        assert post().status_code == 403
        token = browser.get("/console/login/").cookies["csrftoken"].value
        anonymous = post(HTTP_X_CSRFTOKEN=token)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["message"] == "Sign in to the console first."
        browser.force_login(bob)
        assert post().status_code == 403
        token = browser.get("/console/playground/").cookies["csrftoken"].value
        # bob gets the API's own 404 for alice's model: the same route resolution as an API key would.
        response = post(HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
        browser.force_login(alice)
        token = browser.get("/console/playground/").cookies["csrftoken"].value
        response = post(HTTP_X_CSRFTOKEN=token)
        # alice may call it; the tiny catalog entry has no weights here, which the gateway says in its own words.
        assert response.status_code in (400, 503) and response.json()["error"]["message"]
        assert browser.get("/console/playground/chat/").status_code == 405

    with ThreadPoolExecutor(1) as pool:
        pool.submit(scenario).result()


def test_session_chat_endpoint_through_the_asgi_application(transactional_db, alice):
    """What uvicorn serves: the same endpoint, with no Django view in the way (and the Django URL is that endpoint)."""
    from django.urls import resolve

    from deployments import gateway

    from .asgi_support import asgi_exchange

    path = "/console/playground/chat/"
    assert resolve(path).func.__code__ is gateway.django_view(None).__code__  # a delegate, nothing of its own
    assert resolve("/api/paas/v4/chat/completions").func.__code__ is gateway.django_view(None).__code__
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]}).encode()
    json_type = (b"content-type", b"application/json")
    status, _headers, content, _read = asgi_exchange(path, [body], [json_type])
    assert status == 403 and json.loads(content)["error"]["code"] == "csrf_failed"
    token = "a" * 32
    csrf = [(b"cookie", f"csrftoken={token}".encode()), (b"x-csrftoken", token.encode()), json_type]
    status, _headers, content, _read = asgi_exchange(path, [body], csrf)
    assert status == 401 and json.loads(content)["error"]["message"] == "Sign in to the console first."
    client = Client()
    client.force_login(alice)
    session = (b"cookie", f"csrftoken={token}; sessionid={client.cookies['sessionid'].value}".encode())
    status, _headers, content, _read = asgi_exchange(path, [body], [session, *csrf[1:]])
    assert status == 404 and json.loads(content)["error"]["code"] == "model_not_found"
    status, _headers, content, _read = asgi_exchange(path, [b""], csrf, method="GET")
    assert status == 405 and json.loads(content)["error"]["message"]


def test_a_succeeded_task_queues_its_evaluation_after_commit(alice, django_capture_on_commit_callbacks):
    from jobs.runner import _finish_succeeded

    job = _job(alice, "s1", status="running")
    result = SimpleNamespace(
        trained_tokens=100,
        epochs_completed=1,
        final_loss=1.0,
        final_eval_loss=None,
        tokens_per_second=10.0,
        steps=3,
        output_dir="/nowhere",
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert _finish_succeeded(job, result, "/nowhere") == "succeeded"
    assert not Evaluation.objects.exists()  # nothing before the task's own transaction commits
    for callback in callbacks:
        callback()
    evaluation = Evaluation.objects.get()
    assert evaluation.job == job and evaluation.model.code == job.fine_tuned_model and evaluation.status == "queued"
    job.refresh_from_db()
    assert job.status == "succeeded"
    # A second start while one is queued does nothing; the task's held-back prompts are the engine's 10% split.
    assert services.evaluation_start(job=job) is None
    pairs, source = services.evaluation_prompts(job=job)
    assert len(pairs) == 2 and "held back" in source
    assert pairs[0][0][-1]["role"] == "user" and pairs[0][1].startswith("Widget ")


def test_evaluation_section_on_the_card_is_the_owners(client, alice, bob):
    job = _job(alice, "e1", status="succeeded")
    card = make_card(job)
    evaluation = Evaluation.objects.create(
        job=job, model=card, status="succeeded", total=1, done=1, base_f1=0.12, tune_f1=0.81, base_exact=0, tune_exact=1
    )
    EvaluationItem.objects.create(
        evaluation=evaluation,
        index=0,
        messages=[{"role": "user", "content": "What colour is widget 1?"}],
        reference="Widget 1 is green.",
        base_answer="I do not know.",
        tune_answer="Widget 1 is green.",
        tune_f1=1.0,
        tune_exact=1.0,
    )
    client.force_login(alice)
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert 'data-testid="card-evaluation"' in page and "<strong>0.12</strong> → fine-tune <strong>0.81</strong>" in page
    assert "What colour is widget 1?" in page and "I do not know." in page
    client.force_login(bob)
    assert client.get(f"/console/playground/evaluations/{card.code}/").status_code == 404
    assert client.post(f"/console/playground/evaluations/{card.code}/run/").status_code == 404
    client.force_login(alice)
    assert client.post(f"/console/playground/evaluations/{card.code}/run/").status_code == 302
    assert Evaluation.objects.filter(model=card).count() == 2  # re-run: a new evaluation, queued


def _calls(user, n: int, days: int, models: list[str]) -> None:
    now = timezone.now()
    rows = [
        ApiCall(
            user=user,
            model=models[i % len(models)],
            prompt_tokens=10 + i % 7,
            completion_tokens=i % 13,
            status_code=200 if i % 50 else 500,
        )
        for i in range(n)
    ]
    ApiCall.objects.bulk_create(rows, batch_size=2000)
    ids = list(ApiCall.objects.filter(user=user).values_list("id", flat=True))
    for day in range(days):  # spread over the days (auto_now_add set them all to now)
        ApiCall.objects.filter(id__in=ids[day::days]).update(created_at=now - dt.timedelta(days=day))


def test_usage_equals_the_sum_of_recorded_calls_fast_at_10000_rows(client, alice, bob, django_assert_max_num_queries):
    base = BaseModel.objects.order_by("pk").first()
    BaseModel.objects.filter(pk=base.pk).update(inference_price=Decimal("0.0020"))
    job = _job(
        alice, "u1", status="succeeded", trained_tokens=5000, actual_cost=Decimal("0.0500"), finished_at=timezone.now()
    )
    card = make_card(job)
    _calls(alice, 10_500, 5, [base.code, card.code, "other-code"])
    _calls(bob, 300, 2, [base.code])
    today = timezone.localdate()
    with django_assert_max_num_queries(6):
        report = services.usage_report(user=alice, start=today - dt.timedelta(days=29), end=today)
    mine = ApiCall.objects.filter(user=alice)
    assert report["totals"]["calls"] == mine.count() == 10_500
    assert report["totals"]["prompt_tokens"] == sum(mine.values_list("prompt_tokens", flat=True))
    assert report["totals"]["completion_tokens"] == sum(mine.values_list("completion_tokens", flat=True))
    assert report["totals"]["errors"] == mine.exclude(status_code=200).count()
    assert len(report["rows"]) == 5 * 3  # per day, per model
    priced = mine.filter(model__in=[base.code, card.code])  # a fine-tune pays its base model's price
    tokens = sum(p + c for p, c in priced.values_list("prompt_tokens", "completion_tokens"))
    assert report["totals"]["inference_cost"] == pytest.approx(
        Decimal(tokens) / 1000 * Decimal("0.002"), abs=Decimal("0.01")
    )
    assert report["totals"]["training_cost"] == Decimal("0.0500") and report["totals"]["training_tokens"] == 5000

    client.force_login(alice)
    with django_assert_max_num_queries(14):
        page = client.get("/console/usage/").content.decode()
    assert 'data-testid="usage-chart"' in page and "10,500" in page and job.public_id in page
    rows = list(csv.reader(io.StringIO(client.get("/console/usage/export.csv").content.decode())))
    assert rows[0][0] == "Kind" and rows[-1][0] == "Total" and int(rows[-1][3]) == 10_500
    assert sum(int(r[3]) for r in rows if r[0] == "Inference") == 10_500

    client.force_login(bob)  # bob sees his own calls only, none of alice's, and not her task
    page = client.get("/console/usage/").content.decode()
    assert "300" in page and "10,500" not in page and job.public_id not in page and card.code not in page
    rows = list(csv.reader(io.StringIO(client.get("/console/usage/export.csv").content.decode())))
    assert int(rows[-1][3]) == 300 and all(r[2] == base.code for r in rows if r[0] == "Inference")


def test_operator_sees_everyones_usage_in_the_admin(client, alice, bob):
    _calls(alice, 40, 1, ["m-a"])
    _calls(bob, 20, 1, ["m-b"])
    client.force_login(make_user("ops", is_staff=True, is_superuser=True))
    page = client.get("/admin/experience/usagerecord/").content.decode()
    assert "alice" in page and "bob" in page and "<code>m-a</code>" in page and "<code>m-b</code>" in page
    rows = list(csv.reader(io.StringIO(client.get("/admin/experience/usagerecord/?format=csv").content.decode())))
    assert rows[0][2] == "User" and int(rows[-1][4]) == 60
    client.force_login(alice)  # not staff: the admin is closed
    assert client.get("/admin/experience/usagerecord/").status_code == 302


def test_playground_lists_models_it_cannot_serve_disabled_with_the_reason(client, alice, tiny_base):
    client.force_login(alice)
    BaseModel.objects.filter(code="glm-4-flash").update(weights_source="local_dir", weights_location="/nowhere")
    page = client.get("/console/playground/?model=glm-4-flash&compare=glm-4-flash").content.decode()
    reason = BaseModel.objects.get(code="glm-4-flash").capabilities().serve.reason
    assert reason
    assert f'<option value="glm-4-flash" disabled title="{reason}">' in page  # listed, never chosen
    assert 'value="glm-4-flash" selected' not in page
    chosen = re.search(r'<select id="pg-model"[^>]*>.*?<option value="([^"]+)" selected>', page, re.S).group(1)
    assert BaseModel.objects.get(code=chosen).capabilities().serve  # the first one it can serve instead
    assert 'data-testid="not-servable"' in page and f"<code>glm-4-flash</code>: {reason}" in page


def evaluated_job(owner, tag: str, *, task: int, general: int = 20) -> FineTuningJob:
    """A succeeded task whose evaluation scored ``task`` prompts of its own and the ``general`` prompts of the
    default regression set, stored as the evaluation run stores them (items, answers, then the summary)."""
    job = FineTuningJob.objects.create(
        owner=owner,
        base_model=BaseModel.objects.earliest("pk"),
        training_dataset=make_dataset(owner, chat_lines(20)),
        suffix="bot",
        fine_tuned_model=f"ft:base:bot:{tag}",
        status="succeeded",
    )
    card = make_card(job)
    base, result = job.base_model.code, card.code
    evaluation = Evaluation.objects.create(
        job=job,
        model=card,
        status="running",
        total=task + general,
        source="examples held back from train",
        regression_source="the console's general prompts",
        evaluated=[{"code": base, "role": "base"}, {"code": result, "role": "result"}],
    )
    for index in range(task + general):
        kind = EvaluationItem.Kind.TASK if index < task else EvaluationItem.Kind.GENERAL
        item = EvaluationItem.objects.create(
            evaluation=evaluation,
            index=index,
            kind=kind,
            messages=[{"role": "user", "content": f"What colour is widget {index}?"}],
            reference=f"Widget {index} is green.",
        )
        EvaluationAnswer.objects.create(item=item, code=base, role="base", answer="I do not know.", f1=0.09)
        EvaluationAnswer.objects.create(
            item=item, code=result, role="result", answer=f"Widget {index} is green.", f1=1.0, exact=1.0
        )
    summary = services.evaluation_summary(evaluation=evaluation)
    heads = {m["role"]: m for m in summary["models"]}
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status="succeeded",
        done=task + general,
        finished_at=timezone.now(),
        summary=summary,
        base_exact=heads["base"]["exact"],
        base_f1=heads["base"]["f1"],
        tune_exact=heads["result"]["exact"],
        tune_f1=heads["result"]["f1"],
    )
    return job


def test_compare_page_counts_the_prompts_the_scores_come_from(client, alice):
    """The general prompts (the regression set, in ``total``) are not the scores': one prompt of the task's own
    is too few even with the 20 general ones beside it."""
    one, twelve = evaluated_job(alice, "one", task=1), evaluated_job(alice, "twelve", task=12)
    client.force_login(alice)
    html = client.get(f"/console/jobs/compare/?ids={one.public_id},{twelve.public_id}").content.decode()
    row = re.search(
        r'<td class="row-label">Prompts scored[^<]*(?:<span[^>]*>[^<]*</span>)?</td>(.*?)</tr>', html, re.S
    ).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row) == ["1 (too few for the scores to mean much)", "12"]


@pytest.mark.parametrize("total", [1, 9, 10, 40])
def test_evaluation_headline_says_how_many_prompts_and_when_too_few_to_mean_anything(client, alice, total):
    job = _job(alice, f"n{total}", status="succeeded")
    card = make_card(job)
    Evaluation.objects.create(
        job=job,
        model=card,
        status="succeeded",
        total=total,
        done=total,
        base_f1=0.09,
        tune_f1=1.0,
        base_exact=0,
        tune_exact=1,
        source="examples held back from train",
    )
    client.force_login(alice)
    page = client.get(f"/console/models/{card.code}/").content.decode()
    assert "<strong>0.09</strong> → fine-tune <strong>1.00</strong>" in page
    unit = "prompt" if total == 1 else "prompts"
    assert f'<span data-testid="evaluation-n">n = {total} {unit}</span>' in page
    if total < 10:
        assert 'data-testid="evaluation-too-few"' in page
        assert "Not meaningful: scored on fewer than 10 prompts" in page
        assert "fine-tune with a validation file of at least 10 examples" in page
    else:
        assert 'data-testid="evaluation-too-few"' not in page
