"""Tasks that really train: a tiny model through real Celery workers, driven by the zhipuai SDK."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from common import storage
from jobs import services
from jobs.models import Checkpoint, FineTunedModel, FineTuningJob, JobEvent, JobStatus

from .jobs_support import chat_lines, dpo_lines, job_status, make_dataset, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _final(public_id: str, timeout: float = 180) -> str:
    return wait_for(
        lambda: (s := job_status(public_id)) in {"succeeded", "failed", "cancelled"} and s,
        timeout=timeout,
        what=f"{public_id} to end",
    )


def test_sdk_creates_a_task_that_trains_to_success(sdk, alice, tiny_base, training_worker):
    dataset = make_dataset(alice, chat_lines(24))
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=dataset.public_id,
        suffix="widgets",
        request_id="req-train-1",
        hyperparameters={"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 3},
    )
    assert job.status in {"validating_files", "queued", "running"} and job.id.startswith("ftjob-")
    # The SDK retries a create on 5xx; the same request_id gives the same task, not a second one.
    again = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=dataset.public_id, suffix="widgets", request_id="req-train-1"
    )
    assert again.id == job.id and FineTuningJob.objects.count() == 1

    assert _final(job.id) == "succeeded", FineTuningJob.objects.get(public_id=job.id).error_message
    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model.startswith("ft:tiny-test:widgets:")
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at

    row = FineTuningJob.objects.get(public_id=job.id)
    metrics = list(JobEvent.objects.filter(job=row, type="metrics").order_by("id").values_list("data", flat=True))
    losses = [m["loss"] for m in metrics if m.get("loss") is not None]
    assert losses[-1] < losses[0], losses  # the loss really falls
    assert any(m.get("eval_loss") is not None for m in metrics)  # validation at least once an epoch
    checkpoints = list(Checkpoint.objects.filter(job=row).order_by("epoch"))
    assert [c.epoch for c in checkpoints] == [1, 2, 3]  # one per epoch
    # Each is in storage under the task's folder as a model (its adapter); the task succeeded, so none keeps what a
    # resume needs (jobs.checkpoints.checkpoints_publish).
    assert [c.path for c in checkpoints] == [f"jobs/{alice.pk}/{job.id}/checkpoints/epoch-{n}" for n in (1, 2, 3)]
    stored = [{f.relative for f in storage.list_folder(c.path)} for c in checkpoints]
    assert not any("training_state.pt" in files or "trainable.safetensors" in files for files in stored)
    assert all("adapter_model.safetensors" in files for files in stored)
    folders = {f.relative.split("/")[0] for f in storage.list_folder(f"jobs/{alice.pk}/{job.id}/checkpoints")}
    assert folders == {"epoch-1", "epoch-2", "epoch-3"}  # a mid-epoch checkpoint goes when a later one is stored
    assert not services.job_scratch_dir(row).exists()  # the worker's scratch went with the task
    assert row.events.filter(message__startswith="CPUs: training on").exists()  # which CPUs trained it
    from console.cpus import bf16_isa  # and which precision, as TRAINING_PRECISION=auto chose it

    isa = bf16_isa()
    expected = f"Precision: bf16 compute (this CPU has {isa})" if isa else "Precision: fp32 (this device"
    assert row.events.filter(message__startswith=expected).exists(), list(row.events.values_list("message", flat=True))
    card = FineTunedModel.objects.get(job=row)
    assert card.code == done.fine_tuned_model and card.trained_tokens == done.trained_tokens
    assert (card.metrics["final_eval_loss"] or 0) > 0 and card.cost > 0

    events = sdk.fine_tuning.jobs.list_events(job.id, limit=5)
    assert len(events.data) == 5 and events.has_more
    older = sdk.fine_tuning.jobs.list_events(job.id, after=events.data[-1].id, limit=1000)
    assert older.data and not older.has_more
    assert {e.id for e in events.data}.isdisjoint({e.id for e in older.data})
    metric = next(e for e in events.data + older.data if e.type == "metrics")
    assert metric.data.total_steps and metric.data.current_steps is not None and metric.data.elapsed_time

    listed = sdk.fine_tuning.jobs.list(limit=10)
    assert [j.id for j in listed.data] == [job.id]

    # A task that made a model keeps it; deleting the model makes it uncallable, then the task may go.
    from zhipuai.core._errors import APIRequestFailedError

    with pytest.raises(APIRequestFailedError):
        sdk.fine_tuning.jobs.delete(job.id)
    assert card.path == f"jobs/{alice.pk}/{job.id}/final"
    assert "adapter_config.json" in {f.relative for f in storage.list_folder(card.path)}
    status = sdk.fine_tuning.models.delete(fine_tuned_model=done.fine_tuned_model)
    assert status.model_name == done.fine_tuned_model and status.delete_status == "deleted"
    card.refresh_from_db()
    assert card.deleted_at is not None and not storage.folder_exists(card.path)
    sdk.fine_tuning.jobs.delete(job.id)
    assert not FineTuningJob.objects.filter(public_id=job.id).exists()
    assert not storage.folder_exists(f"jobs/{alice.pk}/{job.id}")  # its checkpoints went with it


def test_dpo_lora_trains(sdk, alice, tiny_base, training_worker):
    dataset = make_dataset(alice, dpo_lines(12), category="dpo")
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=dataset.public_id,
        extra_body={"method": "dpo", "training_type": "lora"},
        hyperparameters={"n_epochs": 1, "batch_size": 4},
    )
    assert _final(job.id) == "succeeded", FineTuningJob.objects.get(public_id=job.id).error_message


def test_full_parameter_sft_trains(sdk, alice, tiny_base, training_worker):
    dataset = make_dataset(alice, chat_lines(12))
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=dataset.public_id,
        extra_body={"training_type": "full"},
        hyperparameters={"n_epochs": 1},
    )
    assert _final(job.id) == "succeeded", FineTuningJob.objects.get(public_id=job.id).error_message
    assert FineTuningJob.objects.get(public_id=job.id).training_type == "full"


def test_cancel_stops_a_running_task_within_ten_seconds(sdk, alice, tiny_base, training_worker):
    dataset = make_dataset(alice, chat_lines(48))
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=dataset.public_id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    wait_for(
        lambda: FineTuningJob.objects.filter(public_id=job.id, first_step_at__isnull=False).exists(),
        timeout=120,
        what="the first training step",
    )
    started = time.monotonic()
    assert sdk.fine_tuning.jobs.cancel(job.id).id == job.id
    assert _final(job.id, timeout=10) == "cancelled"
    assert time.monotonic() - started < 10
    assert sdk.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_bad_data_found_before_training_fails_with_its_line(sdk, alice, tiny_base, training_worker):
    lines = [{"messages": [{"role": "user", "content": f"no answer {i}"}]} for i in range(5)]
    dataset = make_dataset(alice, lines)  # marked ready, but no line has anything to learn from
    # The task counts the file again with its own base model's tokenizer, and finds the bad lines.
    job = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=dataset.public_id, hyperparameters={"n_epochs": 1}
    )
    assert _final(job.id) == "failed"
    failed = sdk.fine_tuning.jobs.retrieve(job.id)
    assert failed.error.code == "invalid_training_data"
    assert "line 1: The conversation has no assistant turn" in failed.error.message


def test_a_stopped_worker_hands_its_task_back_at_once(alice, tiny_base, training_worker):
    dataset = make_dataset(alice, chat_lines(48))
    job, _ = services.job_create(
        user=alice, base_model=tiny_base, training_dataset=dataset, hyperparameters={"n_epochs": 20, "batch_size": 2}
    )
    wait_for(lambda: Checkpoint.objects.filter(job=job).exists(), timeout=120, what="a first checkpoint")
    seconds = training_worker.terminate()
    assert seconds < 5, f"the worker took {seconds:.1f} s to stop; it should stop well within the stop grace"
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempts == 0 and job.worker == ""
    messages = list(job.events.values_list("message", flat=True))
    assert any(
        "The worker was stopped; the task is back in the queue and will resume from its checkpoint at step" in m
        for m in messages
    ), messages
    training_worker.ensure()  # the console starts again: the kick message is waiting, no repair needed
    assert _final(job.public_id) == "succeeded"
    job.refresh_from_db()
    assert job.attempts == 1
    assert any("The worker was stopped; resumed from step" in m for m in job.events.values_list("message", flat=True))
    _assert_chart_never_runs_backwards(job)


def test_a_killed_worker_is_noticed_and_the_task_resumes(alice, tiny_base, training_worker):
    dataset = make_dataset(alice, chat_lines(48))
    job, _ = services.job_create(
        user=alice, base_model=tiny_base, training_dataset=dataset, hyperparameters={"n_epochs": 20, "batch_size": 2}
    )
    wait_for(lambda: Checkpoint.objects.filter(job=job).exists(), timeout=120, what="a first checkpoint")
    training_worker.kill()
    assert job_status(job.public_id) == JobStatus.RUNNING  # nobody told the database
    time.sleep(3)
    assert services.jobs_repair(heartbeat_timeout=2)["requeued"] == 1
    assert job_status(job.public_id) == JobStatus.QUEUED
    training_worker.ensure()  # a worker comes back (or another machine's takes over)
    services.jobs_repair(heartbeat_timeout=2)  # the periodic check kicks the queue
    assert _final(job.public_id) == "succeeded"
    job.refresh_from_db()
    assert job.attempts == 2
    messages = list(job.events.values_list("message", flat=True))
    assert any("Worker lost; the task will resume" in m for m in messages)
    assert any(m.startswith("Worker lost; resumed from step") for m in messages), messages
    _assert_chart_never_runs_backwards(job)


def _assert_chart_never_runs_backwards(job) -> None:
    """Metrics logged after the checkpoint a run resumed from were dropped: steps only grow."""
    steps = [
        d["current_steps"]
        for d in job.events.filter(type=JobEvent.Type.METRICS).order_by("id").values_list("data", flat=True)
    ]
    assert steps and steps == sorted(steps) and len(set(steps)) == len(steps), steps
    assert steps[-1] == job.progress["total_steps"]


def test_a_function_call_dataset_is_billed_exactly_the_tokens_it_trains(alice, tiny_base, training_worker):
    import json
    from decimal import ROUND_HALF_UP, Decimal

    from datasets.models import TokenCount

    from .datasets_support import sample

    lines = [json.loads(raw) for raw in sample("function_call.jsonl").read_bytes().splitlines()]
    train = make_dataset(alice, lines, category="function_call", name="calls")
    validation = make_dataset(alice, lines[:2], category="function_call", name="calls-val")
    job, _ = services.job_create(
        user=alice,
        base_model=tiny_base,
        training_dataset=train,
        validation_dataset=validation,
        hyperparameters={"n_epochs": 2, "batch_size": 2},
    )
    assert _final(job.public_id) == "succeeded", FineTuningJob.objects.get(pk=job.pk).error_message
    job.refresh_from_db()
    counted = TokenCount.objects.get(dataset=train, base_model=tiny_base).tokens
    assert job.trained_tokens == 2 * counted == job.estimated_tokens
    assert (
        job.actual_cost
        == (Decimal(job.trained_tokens) / 1000 * tiny_base.training_price).quantize(Decimal("0.0001"), ROUND_HALF_UP)
        == job.estimated_cost
    )


@pytest.mark.timeout(480)
def test_a_queued_task_says_when_it_will_start_and_the_estimate_holds(
    sdk, alice, alice_key, live_server, tiny_base, training_worker, client
):
    import httpx

    data = make_dataset(alice, chat_lines(24))
    # A short task ahead of the long one: how long a task takes from its last step to succeeded, and the worker
    # from one task to the next, are measured from these two, never assumed.
    earlier = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=data.public_id, hyperparameters={"n_epochs": 1, "batch_size": 4}
    )
    first = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=data.public_id, hyperparameters={"n_epochs": 40, "batch_size": 2}
    )
    wait_for(lambda: job_status(first.id) == "running", timeout=240, what="the first task to run")
    assert job_status(earlier.id) == "succeeded"
    second = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=data.public_id, hyperparameters={"n_epochs": 1, "batch_size": 4}
    )

    def job_object() -> dict:
        response = httpx.get(
            f"{live_server.url}/api/paas/v4/fine_tuning/jobs/{second.id}",
            headers={"Authorization": f"Bearer {alice_key}"},
            timeout=30,
        )
        assert response.status_code == 200
        return response.json()

    wait_for(lambda: job_status(second.id) == "queued", timeout=60, what="the second task to be queued")
    assert job_object()["queue_position"] == 1
    row = FineTuningJob.objects.get(public_id=first.id)
    # Its pace is known once an epoch's whole cycle (steps, evaluation, checkpoint) has been seen.
    wait_for(
        lambda: (FineTuningJob.objects.get(pk=row.pk).progress or {}).get("epoch", 0) >= 2.5,
        timeout=120,
        what="the running task's speed",
    )
    asked_at = time.time()
    estimate = job_object()
    row.refresh_from_db()
    assert estimate["queue_position"] == 1 and estimate["estimated_start_at"] is not None, estimate
    promised = estimate["estimated_start_at"] - asked_at
    assert promised > 0

    client.force_login(alice)
    page = client.get(reverse("jobs:detail", args=[second.id])).content.decode()
    assert "Position 1 in the queue" in page and "expected to start" in page

    assert wait_for(
        lambda: job_status(second.id) in {"running", "succeeded"}, timeout=240, what="the second task to start"
    )
    started = FineTuningJob.objects.get(public_id=second.id).started_at.timestamp()
    error = started - estimate["estimated_start_at"]
    print(
        f"queue estimate: promised {promised:.1f} s ahead (running task at {row.progress}), started {error:+.1f} s "
        "from it"
    )
    assert abs(error) <= max(10.0, 0.5 * promised), (promised, error)
    assert job_object()["queue_position"] is None and job_object()["estimated_start_at"] is None
    sdk.fine_tuning.jobs.cancel(second.id)
