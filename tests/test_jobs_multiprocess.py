"""A training worker that trains in several processes (one per GPU; TRAINING_PROCESSES=2 on a CPU, gloo):
the engine runs under torchrun, its events are relayed into the task as the in-process run's are."""

from __future__ import annotations

import pytest
from django.db import connection

from jobs import charts
from jobs.models import Checkpoint, FineTunedModel, FineTuningJob, JobEvent
from jobs.services import job_scratch_dir

from . import services
from .jobs_support import TrainingWorker, chat_lines, job_status, make_dataset, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture
def two_process_worker(celery_worker, django_db_blocker):
    """A training worker with TRAINING_PROCESSES=2; the suite's own training worker stops taking tasks meanwhile."""
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    worker = TrainingWorker(db_name, name="twoproc", env={"TRAINING_PROCESSES": "2", "CUDA_VISIBLE_DEVICES": ""})
    with services.consumers_paused({"training"}):
        yield worker.ensure()
        worker.stop()


def _end(public_id: str) -> str:
    return wait_for(
        lambda: (s := job_status(public_id)) in {"succeeded", "failed", "cancelled"} and s,
        timeout=300,
        what=f"{public_id} to end",
    )


@pytest.mark.timeout(400)
@pytest.mark.parametrize("training_type", ["full", "lora"])
def test_a_task_trains_in_two_processes(sdk, alice, tiny_base, two_process_worker, client, training_type):
    dataset = make_dataset(alice, chat_lines(16))
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=dataset.public_id,
        suffix="two",
        extra_body={"training_type": training_type},
        hyperparameters={"n_epochs": 2, "batch_size": 4},
    )
    assert _end(job.id) == "succeeded", FineTuningJob.objects.get(public_id=job.id).error_message
    row = FineTuningJob.objects.get(public_id=job.id)
    messages = list(JobEvent.objects.filter(job=row).values_list("message", flat=True))
    how = "sharded (FSDP2" if training_type == "full" else "data parallel (DDP)"
    assert any(m.startswith(f"2 processes, {how}") for m in messages), messages

    metrics = [m.data for m in JobEvent.objects.filter(job=row, type="metrics").order_by("id")]
    assert metrics and metrics[-1]["current_steps"] == metrics[-1]["total_steps"] == row.progress["total_steps"]
    assert [m["current_steps"] for m in metrics] == sorted(m["current_steps"] for m in metrics)
    chart = charts.loss_chart(charts.chart_metrics(row))
    assert chart is not None
    assert [c.epoch for c in Checkpoint.objects.filter(job=row).order_by("epoch")] == [1, 2]

    card = FineTunedModel.objects.get(job=row)
    assert card.trained_tokens == row.trained_tokens > 0 and card.metrics["steps"] == metrics[-1]["total_steps"]
    client.force_login(alice)
    assert client.get(f"/console/models/{card.code}/").status_code == 200
    assert not job_scratch_dir(row).exists()  # the worker trained there and cleaned up


@pytest.mark.timeout(300)
def test_cancel_stops_the_processes(sdk, alice, tiny_base, two_process_worker):
    dataset = make_dataset(alice, chat_lines(24))
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=dataset.public_id,
        extra_body={"training_type": "full"},
        hyperparameters={"n_epochs": 50, "batch_size": 2},
    )
    wait_for(
        lambda: JobEvent.objects.filter(job__public_id=job.id, type="metrics").exists(),
        timeout=180,
        what="the first metrics from the processes",
    )
    sdk.fine_tuning.jobs.cancel(job.id)
    assert _end(job.id) == "cancelled"
    row = FineTuningJob.objects.get(public_id=job.id)
    assert (row.progress or {}).get("current_steps", 0) < (row.progress or {}).get("total_steps", 0)
    assert not job_scratch_dir(row).exists()  # the relay ended after the processes did
