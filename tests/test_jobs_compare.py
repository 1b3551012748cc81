"""Comparing two to five tasks: the selection, the overlaid chart, settings with differences marked, owners only."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from jobs import charts, services
from jobs.compare import register_compare_rows, registered_rows
from jobs.models import FineTuningJob, JobEvent, JobStatus

from .jobs_support import chat_lines, make_card, make_dataset

pytestmark = pytest.mark.django_db

URL = "/console/jobs/compare/"


def _job(owner, base, *, losses=(), evals=None, dataset=None, **kwargs) -> FineTuningJob:
    dataset = dataset or make_dataset(owner, chat_lines())
    job = services.job_create(user=owner, base_model=base, training_dataset=dataset, **kwargs)[0]
    total = max(len(losses), 1)
    rows = [{"current_steps": i + 1, "loss": v} for i, v in enumerate(losses)]
    rows += [{"current_steps": step, "eval_loss": v} for step, v in (evals or {}).items()]
    JobEvent.objects.bulk_create(
        [JobEvent(job=job, type="metrics", message="m", data={**row, "total_steps": total}) for row in rows]
    )
    return job


def _ids(*jobs) -> str:
    return ",".join(job.public_id for job in jobs)


def _rows(html: str) -> dict[str, str]:
    """Each row's label and whether it is marked: {"Seed": "true", …}."""
    found = re.findall(r'data-differs="(true|false)"><td class="row-label">([^<]+?)(?: <span|</td>)', html)
    return {label.strip(): differs for differs, label in found}


def test_one_or_six_tasks_are_refused_with_a_message(alice_client, alice, tiny_base):
    jobs = [_job(alice, tiny_base) for _ in range(6)]
    response = alice_client.get(f"{URL}?ids={jobs[0].public_id}&status=queued", follow=True)
    assert response.redirect_chain[-1][0] == "/console/jobs/?status=queued"  # back to the filtered list
    assert "Choose at least two tasks to compare (1 chosen)." in response.content.decode()
    response = alice_client.get(URL + "?" + "&".join(f"id={j.public_id}" for j in jobs), follow=True)
    assert "Compare at most five tasks at a time (6 chosen)." in response.content.decode()
    assert "Choose at least two tasks" in alice_client.get(URL, follow=True).content.decode()


def test_the_list_offers_a_checkbox_per_task_for_the_compare_form(alice_client, alice, tiny_base):
    jobs = [_job(alice, tiny_base) for _ in range(2)]
    html = alice_client.get("/console/jobs/?q=ftjob").content.decode()
    assert 'id="compare-form"' in html and 'action="/console/jobs/compare/"' in html
    assert '<input type="hidden" name="q" value="ftjob">' in html  # a refusal returns to the same filter
    for job in jobs:
        assert f'name="id" value="{job.public_id}" form="compare-form"' in html


def test_chart_overlays_one_line_per_task_with_a_legend(alice_client, alice, tiny_base):
    a = _job(alice, tiny_base, losses=[3.0, 2.0, 1.5, 1.2], evals={4: 1.4})
    b = _job(alice, tiny_base, losses=[3.2, 2.6, 2.1])
    queued = _job(alice, tiny_base)  # no steps yet: in the legend, no line
    html = alice_client.get(f"{URL}?ids={_ids(a, b, queued)}").content.decode()
    assert html.count('data-testid="train-line"') == 2 and html.count('class="eval-line"') == 1
    legend = html[html.index('data-testid="chart-legend"') :]
    for job in (a, b, queued):
        assert f"<code>{job.fine_tuned_model}</code>" in legend
    assert "no training steps yet" in legend and "1.2000 / 1.4000" in legend
    colours = re.findall(r'class="train-line" style="stroke: (#[0-9a-f]{6})"', html)
    assert len(set(colours)) == 2
    for job in (a, b, queued):
        assert f'href="/console/jobs/{job.public_id}/"' in html  # back to each task


def test_tasks_without_steps_show_an_empty_chart(alice_client, alice, tiny_base):
    a, b = _job(alice, tiny_base), _job(alice, tiny_base)
    FineTuningJob.objects.filter(pk=b.pk).update(status=JobStatus.FAILED, error_code="oom")
    html = alice_client.get(f"{URL}?id={a.public_id}&id={b.public_id}").content.decode()
    assert 'data-testid="chart-empty"' in html and 'data-testid="loss-chart"' not in html
    assert "Failed" in html and "Validating files" in html  # each state has its column


def test_overlay_keeps_every_line_short_for_long_runs():
    long = [{"current_steps": i, "total_steps": 12000, "loss": 3 - i / 6000} for i in range(1, 12001)]
    short = [{"current_steps": i, "total_steps": 300, "loss": 2.5} for i in range(1, 301)]
    chart = charts.overlay_chart([("long", long), ("short", short)])
    assert [len(s["train"].split()) for s in chart["series"]] == [charts.MAX_POINTS + 1, 300]
    # One x axis, as long as the longest run: the short run ends a fortieth of the way along.
    assert [t["label"] for t in chart["x_ticks"]] == ["0", "5,000", "10,000"]
    last_x = [float(s["train"].split()[-1].split(",")[0]) for s in chart["series"]]
    fortieth = chart["left"] + (chart["right"] - chart["left"]) / 40
    assert last_x[0] == chart["right"] and last_x[1] == pytest.approx(fortieth, abs=0.1)
    single = charts.loss_chart(short)  # the task page's chart: the same drawing, one run
    assert not single["overlay"] and len(single["series"]) == 1 and single["last_loss"] == 2.5


def test_differing_settings_are_marked_and_equal_ones_are_not(alice_client, alice, tiny_base):
    data = make_dataset(alice, chat_lines(), name="widgets")
    a = _job(alice, tiny_base, dataset=data, hyperparameters={"n_epochs": 2, "batch_size": 4}, seed=7)
    b = _job(alice, tiny_base, dataset=data, hyperparameters={"n_epochs": 3, "batch_size": 4}, seed=7)
    JobEvent.objects.create(job=a, message="Precision: fp32", data={"precision": "fp32", "asked": "auto"})
    html = alice_client.get(f"{URL}?ids={_ids(a, b)}").content.decode()
    rows = _rows(html)
    assert rows["Epochs"] == "true" and rows["Precision"] == "true"
    for same in (
        "Base model",
        "Method",
        "Training type",
        "Batch size",
        "Learning rate",
        "Seed",
        "Training data",
        "Validation data",
    ):
        assert rows[same] == "false", same
    assert "automatic 10% split" in html and ">widgets</a>" in html
    assert "2 rows differ" in html
    only = alice_client.get(f"{URL}?ids={_ids(a, b)}&only=diff").content.decode()
    assert set(_rows(only)) >= {"Epochs", "Precision"} and "Seed" not in _rows(only)
    assert "Show all rows" in only


def test_datasets_of_the_same_name_are_told_apart_as_the_create_form_tells_them(alice_client, alice, tiny_base):
    from datasets.models import Dataset
    from datasets.services import dataset_label

    old = make_dataset(alice, chat_lines(10), name="support")
    new = make_dataset(alice, chat_lines(30), name="support")
    Dataset.objects.filter(pk=old.pk).update(created_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    Dataset.objects.filter(pk=new.pk).update(created_at=datetime(2025, 3, 4, 12, 0, tzinfo=UTC))
    old.refresh_from_db()
    new.refresh_from_db()
    a, b = _job(alice, tiny_base, dataset=old), _job(alice, tiny_base, dataset=new, validation_dataset=old)
    html = alice_client.get(f"{URL}?ids={_ids(a, b)}").content.decode()
    assert _rows(html)["Training data"] == "true" and _rows(html)["Validation data"] == "true"
    details = re.findall(
        r'>support</a><br><span class="muted small" data-testid="dataset-details">([^<]+)</span>', html
    )
    # Training data a, b, then validation data b: each as the create form's picker labels it, after the name.
    form = alice_client.get("/console/jobs/create/").content.decode()
    for dataset, shown in zip((old, new, old), details, strict=True):
        label = dataset_label(dataset)
        assert f"support · {shown}" == label and f">{label}</option>" in form
    assert details[0] != details[1] and "2025-03-01" in details[0] and "2025-03-04" in details[1]
    assert "10 examples" in details[0] and "30 examples" in details[1]


def test_a_task_page_links_to_comparing_it_with_the_task_before(alice_client, alice, bob, tiny_base):
    first = _job(alice, tiny_base)
    _job(bob, tiny_base)  # not alice's: never offered
    html = alice_client.get(f"/console/jobs/{first.public_id}/").content.decode()
    assert 'data-testid="compare-link"' not in html  # nothing to compare with yet
    second = _job(alice, tiny_base)
    html = alice_client.get(f"/console/jobs/{second.public_id}/").content.decode()
    assert f'href="/console/jobs/compare/?ids={second.public_id}%2C{first.public_id}"' in html
    html = alice_client.get(f"/console/jobs/{first.public_id}/").content.decode()
    assert f'?ids={first.public_id}%2C{second.public_id}"' in html


def test_another_users_task_is_404(client, alice, bob, tiny_base):
    mine = [_job(bob, tiny_base), _job(bob, tiny_base)]
    theirs = _job(alice, tiny_base)
    client.force_login(bob)
    assert client.get(f"{URL}?ids={_ids(*mine)}").status_code == 200
    response = client.get(f"{URL}?ids={_ids(mine[0], theirs)}")
    assert response.status_code == 404
    html = response.content.decode()
    assert "not among your fine-tuning tasks" in html and theirs.fine_tuned_model not in html
    unknown = client.get(f"{URL}?ids={mine[0].public_id},ftjob-nope")
    assert unknown.status_code == 404 and "<code>ftjob-nope</code>" in unknown.content.decode()


def test_the_evaluation_comes_through_the_registry(alice_client, alice, tiny_base):
    from experience.models import Evaluation

    a, b = _job(alice, tiny_base), _job(alice, tiny_base)
    Evaluation.objects.create(
        job=a,
        model=make_card(a),
        status="succeeded",
        total=20,
        done=20,
        base_f1=0.31,
        tune_f1=0.87,
        base_exact=0.1,
        tune_exact=0.65,
    )
    html = alice_client.get(f"{URL}?ids={_ids(a, b)}").content.decode()
    section = html[html.index('data-testid="compare-evaluation"') :]
    assert "0.31 → 0.87" in section and "0.10 → 0.65" in section and "not evaluated" in section
    assert [label for label, _cells in [(r.label, r.cells) for r in registered_rows([a, b])]][0] == "Evaluation"


def test_a_registered_row_is_shown_in_the_order_of_the_tasks(alice_client, alice, tiny_base, monkeypatch):
    from jobs import compare

    monkeypatch.setattr(compare, "_row_providers", list(compare._row_providers))
    register_compare_rows(lambda jobs: [("Probe", [j.public_id[-4:] for j in jobs])])
    a, b = _job(alice, tiny_base), _job(alice, tiny_base)
    html = alice_client.get(f"{URL}?ids={_ids(b, a)}").content.decode()
    assert f"<td>{b.public_id[-4:]}</td><td>{a.public_id[-4:]}</td>" in html


def _login(page, live_server) -> None:
    page.goto(f"{live_server.url}/console/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button.primary")
    page.wait_for_selector("nav.sidenav", state="attached")


def _curve(start: float, end: float, n: int) -> list[float]:
    return [end + (start - end) * 0.92**i for i in range(n)]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_pick_tasks_on_the_list_and_compare_them_in_chromium(page, live_server, alice, tiny_base, screenshot_dir):
    from datetime import timedelta

    from django.utils import timezone

    from experience.models import Evaluation

    data = make_dataset(alice, chat_lines(48), name="widgets")
    a = _job(
        alice,
        tiny_base,
        dataset=data,
        suffix="lr-low",
        losses=_curve(3.4, 0.9, 60),
        evals={20: 1.6, 40: 1.2, 60: 1.1},
        hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 0.5},
    )
    b = _job(
        alice,
        tiny_base,
        dataset=data,
        suffix="lr-high",
        losses=_curve(3.5, 0.4, 60),
        evals={20: 1.1, 40: 0.9, 60: 1.0},
        hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 2},
    )
    running = _job(alice, tiny_base, suffix="more-data", losses=_curve(3.3, 1.5, 25))
    now = timezone.now()
    for job in (a, b):
        FineTuningJob.objects.filter(pk=job.pk).update(
            status="succeeded",
            started_at=now - timedelta(minutes=7),
            finished_at=now,
            trained_tokens=5760,
            actual_cost="0.0576",
        )
        Evaluation.objects.create(
            job=job,
            model=make_card(job, metrics={"final_loss": 0.9, "final_eval_loss": 1.1}),
            status="succeeded",
            total=12,
            done=12,
            base_f1=0.21,
            tune_f1=0.8 if job == b else 0.6,
            base_exact=0.0,
            tune_exact=0.5,
        )
    FineTuningJob.objects.filter(pk=running.pk).update(status="running", started_at=now)
    _login(page, live_server)
    page.goto(f"{live_server.url}/console/jobs/")
    page.check(f"#pick-{a.public_id}")
    page.click("[data-testid=compare-button]")
    page.wait_for_selector(".message.error >> text=Choose at least two tasks")
    for job in (a, b, running):
        page.check(f"#pick-{job.public_id}")
    page.wait_for_timeout(2500)  # the list refreshes every 2 s while a task runs: the ticks stay
    assert page.is_checked(f"#pick-{running.public_id}")
    page.screenshot(path=str(screenshot_dir / "jobs-list-compare.png"))
    page.click("[data-testid=compare-button]")
    page.wait_for_selector("[data-testid=loss-chart]")
    assert page.locator("[data-testid=train-line]").count() == 3
    assert page.locator("[data-testid=legend-item]").count() == 3
    assert page.locator("[data-testid=compare-settings] tr[data-differs=true]").count() >= 2
    page.screenshot(path=str(screenshot_dir / "jobs-compare.png"), full_page=True)
    page.click("[data-testid=toggle-differences]")
    page.wait_for_selector("text=Show all rows")
    assert page.locator("[data-testid=compare-settings] tr[data-differs=false]").count() == 0
