"""Fine-tuning tasks without a worker: creation rules, estimates, queue, cancel, repair."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from jobs import services, states
from jobs.models import BaseModel, Checkpoint, FineTuningJob, JobStatus

from .jobs_support import chat_lines, dpo_lines, make_dataset

pytestmark = pytest.mark.django_db


def _create(user, base, dataset, **kwargs):
    return services.job_create(user=user, base_model=base, training_dataset=dataset, **kwargs)[0]


def test_auto_hyperparameters_are_resolved_and_shown():
    resolved = services.hyperparameters_resolve(
        requested={"n_epochs": "auto"}, method="sft", training_type="lora", examples=300
    )
    assert resolved == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0, "learning_rate": 1e-3}
    resolved = services.hyperparameters_resolve(
        requested={"n_epochs": 2, "batch_size": "4", "learning_rate_multiplier": 0.5},
        method="sft",
        training_type="full",
        examples=10,
    )
    assert resolved["n_epochs"] == 2 and resolved["batch_size"] == 4 and resolved["learning_rate"] == 1e-5


@pytest.mark.parametrize(
    "bad", [{"n_epochs": 0}, {"batch_size": "lots"}, {"learning_rate_multiplier": 100}, {"warmup": 3}]
)
def test_bad_hyperparameters_are_refused_with_the_field(bad):
    with pytest.raises(services.JobInputError) as exc:
        services.hyperparameters_resolve(requested=bad, method="sft", training_type="lora", examples=10)
    assert exc.value.param in {*bad, "hyperparameters"}


def test_cost_follows_the_platform_formula(alice, tiny_base):
    dataset = make_dataset(alice, chat_lines(10))  # 400 tokens an epoch
    estimate = services.job_estimate(base_model=tiny_base, dataset=dataset, n_epochs=3)
    assert estimate.total_tokens == 1200
    assert estimate.cost == Decimal("0.0120")  # 1,200 / 1,000 × 0.01
    assert "400 tokens × 3 epochs" in estimate.formula


def test_image_models_bill_per_image(alice):
    glm4v = BaseModel.objects.get(code="glm-4v")
    dataset = make_dataset(alice, chat_lines(2), category="image_understanding")
    dataset.images, dataset.text_tokens = 5, 100
    tokens, words = services.billing_tokens_per_epoch(base_model=glm4v, dataset=dataset)
    assert tokens == 5 * 1600 + 100
    cogview = BaseModel.objects.get(code="cogview-3")
    assert services.billing_tokens_per_epoch(base_model=cogview, dataset=dataset)[0] == 5 * 1024


def test_create_gives_a_unique_code_and_idempotent_request_id(alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    job = _create(alice, tiny_base, dataset, suffix="my-bot", request_id="req-1")
    assert job.status == JobStatus.VALIDATING_FILES
    assert job.fine_tuned_model.startswith("ft:tiny-test:my-bot:")
    again, created = services.job_create(
        user=alice, base_model=tiny_base, training_dataset=dataset, suffix="my-bot", request_id="req-1"
    )
    assert again.pk == job.pk and not created
    other = _create(alice, tiny_base, dataset, suffix="my-bot")
    assert other.fine_tuned_model != job.fine_tuned_model


@pytest.mark.parametrize("suffix", ["UPPER", "has space", "x" * 41, "dots.no"])
def test_bad_suffix_is_refused(alice, tiny_base, suffix):
    with pytest.raises(services.JobInputError) as exc:
        _create(alice, tiny_base, make_dataset(alice, chat_lines()), suffix=suffix)
    assert exc.value.param == "suffix"


def test_models_without_weights_cannot_be_fine_tuned(alice):
    dataset = make_dataset(alice, chat_lines())
    with pytest.raises(services.JobInputError) as exc:
        _create(alice, BaseModel.objects.get(code="glm-4-flash"), dataset)
    assert exc.value.code == "weights_missing" and "not on this server" in exc.value.message


def test_only_what_the_model_allows(alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    tiny_base.training_types = ["lora"]
    tiny_base.save()
    with pytest.raises(services.JobInputError) as exc:
        _create(alice, tiny_base, dataset, training_type="full")
    assert exc.value.param == "training_type"
    with pytest.raises(services.JobInputError) as exc:
        _create(alice, tiny_base, dataset, method="dpo")  # chat data for DPO
    assert exc.value.code == "invalid_file_category"
    assert _create(alice, tiny_base, make_dataset(alice, dpo_lines(), category="dpo"), method="dpo")


def test_a_wrong_category_names_what_the_models_modality_takes(alice, tiny_base):
    chat = make_dataset(alice, chat_lines())
    tiny_base.modality = "image_generation"
    tiny_base.save(update_fields=["modality"])

    def refusal(method: str) -> str:
        with pytest.raises(services.JobInputError) as exc:
            services.job_check_dataset(user=alice, base_model=tiny_base, method=method, dataset=chat, param="x")
        assert exc.value.code == "invalid_file_category" and exc.value.param == "x"
        return exc.value.message

    assert refusal("sft") == (
        "train is in the category “Text generation: chat”; SFT on tiny-test needs a dataset in the category "
        "“Image generation (single image)”."
    )
    assert refusal("dpo") == "train is in the category “Text generation: chat”; DPO on tiny-test trains on no category."


def test_another_users_dataset_cannot_be_used(alice, bob, tiny_base):
    with pytest.raises(services.JobInputError) as exc:
        _create(bob, tiny_base, make_dataset(alice, chat_lines()))
    assert exc.value.code == "file_not_found"


def test_invalid_dataset_fails_the_task_when_found(alice, tiny_base):
    dataset = make_dataset(alice, chat_lines(), status="validating")
    job = _create(alice, tiny_base, dataset)
    assert services.job_prepare(job_id=job.pk) == "wait"
    dataset.status, dataset.error_count = "invalid", 3
    dataset.save()
    assert services.job_prepare(job_id=job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_code == "invalid_file"
    assert "did not pass validation" in job.error_message


def test_queue_is_oldest_first_with_positions(alice, bob, tiny_base):
    jobs = []
    for owner in (alice, bob, alice):
        job = _create(owner, tiny_base, make_dataset(owner, chat_lines()))
        assert services.job_prepare(job_id=job.pk) == "queued"
        jobs.append(FineTuningJob.objects.get(pk=job.pk))
    assert [services.queue_position(j) for j in jobs] == [1, 2, 3]
    claimed = services.job_claim_next(worker="w1")
    assert claimed.pk == jobs[0].pk and claimed.status == JobStatus.RUNNING and claimed.attempts == 1
    assert services.queue_position(FineTuningJob.objects.get(pk=jobs[2].pk)) == 2


def test_cancelled_queued_task_never_starts(alice, tiny_base):
    job = _create(alice, tiny_base, make_dataset(alice, chat_lines()))
    services.job_prepare(job_id=job.pk)
    states.job_cancel(job=job)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.finished_at
    assert services.job_claim_next(worker="w1") is None


def test_cancel_of_running_task_is_a_request_the_worker_sees(alice, tiny_base):
    job = _create(alice, tiny_base, make_dataset(alice, chat_lines()))
    services.job_prepare(job_id=job.pk)
    services.job_claim_next(worker="w1")
    states.job_cancel(job=job)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.cancel_requested_at


def test_repair_requeues_a_lost_worker_then_gives_up(alice, tiny_base):
    assert settings.JOB_HEARTBEAT_TIMEOUT + 30 <= 120  # noticed within two minutes (beat runs repair every 30 s)
    job = _create(alice, tiny_base, make_dataset(alice, chat_lines()))
    services.job_prepare(job_id=job.pk)
    services.job_claim_next(worker="w1")
    Checkpoint.objects.create(job=job, epoch=1, path="/nowhere")
    FineTuningJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=300))
    assert services.jobs_repair()["requeued"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert "resume from its epoch 1 checkpoint" in job.events.last().message
    for _ in range(2):
        services.job_claim_next(worker="w2")
        FineTuningJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=300))
        services.jobs_repair()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_code == "worker_lost"
    assert "worker lost" in job.error_message and job.attempts == 3


def test_a_fresh_heartbeat_is_left_alone(alice, tiny_base):
    job = _create(alice, tiny_base, make_dataset(alice, chat_lines()))
    services.job_prepare(job_id=job.pk)
    services.job_claim_next(worker="w1")
    assert services.jobs_repair()["requeued"] == 0
    assert FineTuningJob.objects.get(pk=job.pk).status == JobStatus.RUNNING


def test_delete_needs_a_final_task_and_keeps_datasets(alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    job = _create(alice, tiny_base, dataset)
    with pytest.raises(services.JobNotDeletable):
        services.job_delete(job=job)
    states.job_cancel(job=job)
    job.refresh_from_db()
    services.job_delete(job=job)
    assert not FineTuningJob.objects.filter(pk=job.pk).exists()
    dataset.refresh_from_db()


def test_repair_kicks_the_queue_only_when_no_message_waits(alice, tiny_base, monkeypatch):
    job = _create(alice, tiny_base, make_dataset(alice, chat_lines()))
    services.job_prepare(job_id=job.pk)
    sent = []
    monkeypatch.setattr(states, "kick_training", lambda: sent.append(1))
    monkeypatch.setattr(services, "_training_messages_waiting", lambda: 1)
    assert services.jobs_repair()["kicked"] == 0 and not sent
    monkeypatch.setattr(services, "_training_messages_waiting", lambda: 0)
    assert services.jobs_repair()["kicked"] == 1 and sent == [1]


def test_training_queue_length_is_read_from_redis():
    from common.redis import redis_client

    queue = "test-queue-length"  # not a queue any worker reads
    with redis_client() as client:
        client.delete(queue)
        assert services._training_messages_waiting(queue) == 0
        client.rpush(queue, "x", "y")
        try:
            assert services._training_messages_waiting(queue) == 2
        finally:
            client.delete(queue)


def test_a_stopped_worker_hands_back_its_task_unless_a_cancel_was_asked_for(alice, tiny_base):
    from jobs.runner import _finish_cancelled, _requeue_preempted

    dataset = make_dataset(alice, chat_lines())
    handed_back, _ = services.job_create(user=alice, base_model=tiny_base, training_dataset=dataset)
    cancelled, _ = services.job_create(user=alice, base_model=tiny_base, training_dataset=dataset)
    FineTuningJob.objects.filter(pk__in=[handed_back.pk, cancelled.pk]).update(
        status=JobStatus.RUNNING, attempts=1, worker="w:1"
    )
    Checkpoint.objects.create(job=handed_back, epoch=2, path="/nowhere")
    FineTuningJob.objects.filter(pk=cancelled.pk).update(cancel_requested_at=timezone.now())

    assert _requeue_preempted(handed_back) is True
    handed_back.refresh_from_db()
    assert (handed_back.status, handed_back.attempts, handed_back.worker) == (JobStatus.QUEUED, 0, "")
    assert handed_back.events.filter(message__contains="will resume from its epoch 2 checkpoint").exists()

    assert _requeue_preempted(cancelled) is False  # the user's cancel wins over the worker's stop
    assert _finish_cancelled(cancelled) == "cancelled"
    cancelled.refresh_from_db()
    assert cancelled.status == JobStatus.CANCELLED
