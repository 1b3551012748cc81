"""The admin shows a fine-tuning task's live state without editing it, and does not create tasks."""

from __future__ import annotations

import pytest

from jobs import services
from jobs.models import FineTuningJob, JobStatus

from .jobs_support import chat_lines, make_dataset

pytestmark = pytest.mark.django_db

LIVE_FIELDS = [
    "status",
    "owner",
    "base_model",
    "training_dataset",
    "hyperparameters",
    "resolved_hyperparameters",
    "estimated_cost",
    "actual_cost",
    "trained_tokens",
    "progress",
    "method",
    "training_type",
]


def _running_job(alice, tiny_base) -> FineTuningJob:
    job = services.job_create(user=alice, base_model=tiny_base, training_dataset=make_dataset(alice, chat_lines()))[0]
    FineTuningJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, progress={"current_steps": 2, "total_steps": 4}
    )
    job.refresh_from_db()
    return job


def test_change_form_of_a_running_task_edits_none_of_its_live_state(admin_client, alice, bob, tiny_base):
    job = _running_job(alice, tiny_base)
    url = f"/admin/jobs/finetuningjob/{job.pk}/change/"
    html = admin_client.get(url).content.decode()
    for name in LIVE_FIELDS:
        assert f'name="{name}"' not in html, name
    assert "running" in html.lower()  # shown, read-only
    before = FineTuningJob.objects.values().get(pk=job.pk)
    admin_client.post(
        url,
        {
            "status": "succeeded",
            "owner": bob.pk,
            "hyperparameters": '{"n_epochs": 50}',
            "actual_cost": "0",
            "progress": "{}",
            "checkpoints-TOTAL_FORMS": "0",
            "checkpoints-INITIAL_FORMS": "0",
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
        },
    )
    assert FineTuningJob.objects.values().get(pk=job.pk) == before


def test_admin_does_not_offer_adding_a_task(admin_client, alice, tiny_base):
    _running_job(alice, tiny_base)
    assert admin_client.get("/admin/jobs/finetuningjob/add/").status_code == 403
    html = admin_client.get("/admin/jobs/finetuningjob/").content.decode()
    assert "/admin/jobs/finetuningjob/add/" not in html
    assert FineTuningJob.objects.count() == 1
