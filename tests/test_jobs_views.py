"""The fine-tuning pages and API: the create form with its live estimate, detail partials, owners only."""

from __future__ import annotations

import httpx
import pytest

from accounts.models import ApiKey
from jobs import services, states
from jobs.models import FineTuningJob, JobEvent, JobStatus

from .jobs_support import chat_lines, make_dataset

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _job(owner, base, **kwargs) -> FineTuningJob:
    return services.job_create(
        user=owner, base_model=base, training_dataset=make_dataset(owner, chat_lines()), **kwargs
    )[0]


def _form(dataset, **extra) -> dict:
    return {
        "base_model": "tiny-test",
        "method": "sft",
        "training_type": "lora",
        "training_dataset": dataset.pk,
        "n_epochs": "auto",
        "batch_size": "auto",
        "learning_rate_multiplier": "auto",
        "suffix": "",
        **extra,
    }


def test_empty_list_says_what_to_do(alice_client):
    html = alice_client.get("/console/jobs/").content.decode()
    assert "No fine-tuning tasks yet" in html and "/console/jobs/create/" in html


def test_one_example_reads_singular_in_the_few_examples_warning(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines(1))
    html = alice_client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    assert "Only 1 example: the platform advises" in html
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    html = alice_client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    assert "仅有 1 条样本" in html


def test_create_form_offers_only_models_with_weights(alice_client, tiny_base):
    html = alice_client.get("/console/jobs/create/?model=tiny-test").content.decode()
    assert '<option value="tiny-test" selected>' in html
    assert 'value="glm-4-flash"' not in html and "<code>glm-4-flash</code>" in html  # said, not offered


def test_live_estimate_shows_tokens_cost_formula_and_auto_values(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines(10))
    html = alice_client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    assert 'data-testid="tokens">400<' in html
    assert 'data-testid="cost">0.0200<' in html  # 400 × 5 epochs (auto for < 100 examples) × 0.01 / 1000
    assert "400 tokens × 5 epochs" in html
    assert "Only 10 examples" in html  # fewer than advised: a warning, not a refusal
    html = alice_client.post("/console/jobs/estimate/", _form(dataset, n_epochs="2"), **HTMX).content.decode()
    assert 'data-testid="cost">0.0080<' in html


def test_bad_form_keeps_what_was_typed(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    response = alice_client.post("/console/jobs/create/", _form(dataset, suffix="Bad Suffix!", n_epochs="7"))
    html = response.content.decode()
    assert response.status_code == 200 and "at most 40 characters" in html
    assert 'value="Bad Suffix!"' in html and 'value="7"' in html
    assert not FineTuningJob.objects.exists()


def test_create_from_the_form_redirects_to_the_task(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    response = alice_client.post("/console/jobs/create/", _form(dataset, suffix="demo"))
    job = FineTuningJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/console/jobs/{job.public_id}/"
    assert job.owner == alice and job.fine_tuned_model.startswith("ft:tiny-test:demo:")


def test_detail_partial_polls_until_final_then_stops(alice_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    services.job_prepare(job_id=job.pk)
    url = f"/console/jobs/{job.public_id}/?partial=live"
    queued = alice_client.get(url, **HTMX)
    assert queued.status_code == 200 and "Position 1 in the queue" in queued.content.decode()
    services.job_claim_next(worker="w")
    for step, loss in [(1, 3.0), (2, 2.5)]:
        JobEvent.objects.create(
            job=job,
            type="metrics",
            message="m",
            data={"current_steps": step, "total_steps": 4, "loss": loss, "epoch": step / 2},
        )
    FineTuningJob.objects.filter(pk=job.pk).update(progress={"current_steps": 2, "total_steps": 4, "epoch": 1.0})
    running = alice_client.get(url, **HTMX).content.decode()
    assert 'aria-valuenow="50.0"' in running and 'data-testid="loss-chart"' in running
    assert "<html" not in running
    states.job_cancel(job=job)
    FineTuningJob.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)
    assert alice_client.get(url, **HTMX).status_code == 286  # htmx stops polling


def test_pages_of_another_users_task_are_404(client, alice, bob, tiny_base):
    job = _job(alice, tiny_base)
    client.force_login(bob)
    for url in [
        f"/console/jobs/{job.public_id}/",
        f"/console/jobs/{job.public_id}/?partial=live",
        f"/console/jobs/{job.public_id}/cancel/",
        f"/console/jobs/{job.public_id}/delete/",
    ]:
        assert client.get(url, **HTMX).status_code == 404, url
    assert client.post(f"/console/jobs/{job.public_id}/cancel/").status_code == 404
    assert job.public_id not in client.get("/console/jobs/").content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.VALIDATING_FILES


def test_cancel_and_delete_ask_first(alice_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    assert "never start" in alice_client.get(f"/console/jobs/{job.public_id}/cancel/").content.decode()
    alice_client.post(f"/console/jobs/{job.public_id}/cancel/")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert "cannot be undone" in alice_client.get(f"/console/jobs/{job.public_id}/delete/").content.decode()
    assert alice_client.post(f"/console/jobs/{job.public_id}/delete/").status_code == 302
    assert not FineTuningJob.objects.filter(pk=job.pk).exists()


def test_model_square_says_where_weights_are_missing(alice_client, tiny_base):
    html = alice_client.get("/console/models/").content.decode()
    assert 'data-testid="model-smollm2-135m-instruct"' in html
    assert "is not in the local Hugging Face cache" in html or "No weights configured" in html
    assert "glm-4-0520" not in html  # annual private plans only


def test_list_shows_progress_and_polls_while_active(alice_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    html = alice_client.get("/console/jobs/").content.decode()
    assert job.public_id in html and 'hx-trigger="every 2s"' in html
    states.job_cancel(job=job)
    assert alice_client.get("/console/jobs/?partial=table", **HTMX).status_code == 286


@pytest.mark.django_db(transaction=True)
def test_api_is_owner_only(live_server, alice, bob, tiny_base):
    job = _job(alice, tiny_base)
    _key, bob_key = ApiKey.create_for(user=bob, name="bob")
    headers = {"Authorization": f"Bearer {bob_key}"}
    base = f"{live_server.url}/api/paas/v4/fine_tuning/jobs"
    for method, url in [
        ("GET", f"{base}/{job.public_id}"),
        ("POST", f"{base}/{job.public_id}/cancel"),
        ("GET", f"{base}/{job.public_id}/events"),
        ("DELETE", f"{base}/{job.public_id}"),
    ]:
        response = httpx.request(method, url, headers=headers)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "404"
    assert httpx.get(base, headers=headers).json()["data"] == []
    alices_file = job.training_dataset.public_id
    response = httpx.post(base, headers=headers, json={"model": "tiny-test", "training_file": alices_file})
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"


@pytest.mark.django_db(transaction=True)
def test_api_errors_have_the_platform_shape(sdk, alice, tiny_base):
    from zhipuai.core._errors import APIRequestFailedError, APIStatusError

    dataset = make_dataset(alice, chat_lines())
    with pytest.raises(APIRequestFailedError) as exc:
        sdk.fine_tuning.jobs.create(model="glm-4-flash", training_file=dataset.public_id)
    assert "weights_missing" in str(exc.value)
    with pytest.raises(APIStatusError) as exc:  # an unknown or hidden model is a 404, as in chat
        sdk.fine_tuning.jobs.create(model="no-such-model", training_file=dataset.public_id)
    assert exc.value.status_code == 404 and "model_not_found" in str(exc.value)
    with pytest.raises(APIRequestFailedError):
        sdk.fine_tuning.jobs.create(model="tiny-test", training_file="file-nope")


def test_a_catalog_entry_hidden_from_the_user_is_a_404_as_in_chat(client, alice):
    """glm-4-0520 is for annual private plans: to anyone else, creating a task on it answers as chat does, as if
    it did not exist (not "not available to you", which would tell that it does)."""
    from modelcards.models import Availability, BaseModel

    assert BaseModel.objects.get(code="glm-4-0520").availability == Availability.ANNUAL_PRIVATE
    dataset = make_dataset(alice, chat_lines())
    headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiKey.create_for(user=alice, name='t')[1]}"}

    def create(model: str):
        body = {"model": model, "training_file": dataset.public_id}
        return client.post("/api/paas/v4/fine_tuning/jobs", body, content_type="application/json", **headers)

    hidden, unknown = create("glm-4-0520").json(), create("glm-4-9999").json()
    assert hidden["error"]["code"] == unknown["error"]["code"] == "model_not_found"
    assert hidden["error"]["message"] == unknown["error"]["message"].replace("glm-4-9999", "glm-4-0520")
    assert create("glm-4-0520").status_code == 404 and hidden["error"]["param"] == "model"
    assert not FineTuningJob.objects.exists()
    alice.is_staff = True  # staff see every entry: past the 404, to what stops it (no weights on this server)
    alice.save(update_fields=["is_staff"])
    response = create("glm-4-0520")
    assert response.status_code == 400 and response.json()["error"]["code"] == "weights_missing"


def test_overview_counts_are_real_and_per_user(client, alice, bob, tiny_base):
    job = _job(alice, tiny_base)
    client.force_login(alice)
    html = client.get("/console/").content.decode()
    assert 'data-testid="dataset-count">1<' in html and 'data-testid="job-count">1<' in html
    assert job.fine_tuned_model in html
    client.force_login(bob)
    html = client.get("/console/").content.decode()
    assert 'data-testid="dataset-count">0<' in html and 'data-testid="job-count">0<' in html
    assert job.fine_tuned_model not in html


@pytest.mark.django_db(transaction=True)
def test_upload_in_the_create_form_validates_then_queues(client, alice, tiny_base, celery_worker):
    from pathlib import Path

    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.models import Dataset

    from .jobs_support import wait_for

    client.force_login(alice)
    sample = Path(__file__).resolve().parent.parent / "samples" / "chat.jsonl"
    form = {k: v for k, v in _form(make_dataset(alice, chat_lines())).items() if k != "training_dataset"}
    form["training_upload"] = SimpleUploadedFile("mine.jsonl", sample.read_bytes())
    response = client.post("/console/jobs/create/", form)
    assert response.status_code == 302
    job = FineTuningJob.objects.get(owner=alice)
    uploaded = Dataset.objects.get(owner=alice, filename="mine.jsonl")  # it lands in the user's datasets
    assert job.training_dataset == uploaded
    # Queued once validated (a training worker left running by another test may already have taken it).
    wait_for(
        lambda: job.events.filter(message="Files validated; the task is queued.").exists(),
        timeout=90,
        what="validation then queueing",
    )
    job.refresh_from_db()
    uploaded.refresh_from_db()
    assert uploaded.status == "ready" and uploaded.category == "chat"
    assert job.estimated_tokens == uploaded.tokens * job.resolved_hyperparameters["n_epochs"]
    states.job_cancel(job=job)
    # a worker that took it stops within seconds: wait, so that it is not writing while the test's tables are
    # emptied (on PostgreSQL the truncation and the worker's row locks deadlocked)
    wait_for(lambda: FineTuningJob.objects.get(pk=job.pk).is_final, timeout=60, what="the task to stop")


def test_task_pages_speak_chinese(alice_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    alice.language = "zh-hans"
    alice.save()
    assert "创建微调任务" in alice_client.get("/console/jobs/").content.decode()
    html = alice_client.get(f"/console/jobs/{job.public_id}/").content.decode()
    assert "自动划分 10%" in html and "校验文件中" in html
    assert "预估" in alice_client.get("/console/jobs/create/").content.decode()
    assert "模型广场" in alice_client.get("/console/models/").content.decode()


def test_too_large_upload_in_the_create_form_leaves_nothing(alice_client, alice, tiny_base, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets.models import Dataset

    settings.DATASET_MAX_BYTES = 1000
    form = {k: v for k, v in _form(make_dataset(alice, chat_lines())).items() if k != "training_dataset"}
    form["training_upload"] = SimpleUploadedFile("big.jsonl", b'{"messages": []}\n' * 200)
    response = alice_client.post("/console/jobs/create/", form)
    assert response.status_code == 413
    assert "larger than the limit" in response.content.decode()
    assert not FineTuningJob.objects.exists()
    assert not Dataset.objects.filter(filename="big.jsonl").exists()


def test_a_ready_dataset_links_to_a_task_on_it(alice_client, alice, tiny_base):
    dataset = make_dataset(alice, chat_lines())
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/").content.decode()
    assert f"/console/jobs/create/?dataset={dataset.pk}" in html
    form = alice_client.get(f"/console/jobs/create/?dataset={dataset.pk}").content.decode()
    assert f'<option value="{dataset.pk}" selected>' in form


def test_list_at_ten_thousand_tasks_uses_a_fixed_number_of_queries(alice_client, alice, bob, tiny_base):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    dataset = make_dataset(alice, chat_lines())
    FineTuningJob.objects.bulk_create(
        [
            FineTuningJob(
                owner=alice,
                base_model=tiny_base,
                training_dataset=dataset,
                fine_tuned_model=f"ft:t:{i}",
                status=JobStatus.SUCCEEDED if i % 2 else JobStatus.FAILED,
                error_code="training_error",
                progress={"percent": 100},
            )
            for i in range(10_000)
        ],
        batch_size=2000,
    )
    with CaptureQueriesContext(connection) as ctx:
        response = alice_client.get("/console/jobs/?page=250")
    html = response.content.decode()
    assert response.status_code == 200 and "Page 250 of 500 (10000 in all)" in html
    assert html.count('href="/console/jobs/ftjob-') == 20
    assert len(ctx.captured_queries) <= 6, [q["sql"] for q in ctx.captured_queries]
    filtered = alice_client.get("/console/jobs/?status=failed").content.decode()
    assert "(5000 in all)" in filtered
    # bob sees none of them
    from django.test import Client

    other = Client()
    other.force_login(bob)
    assert "No fine-tuning tasks yet" in other.get("/console/jobs/").content.decode()


@pytest.mark.parametrize(("losses", "hint"), [((0.104, 0.132, 0.127), True), ((0.3, 0.2, 0.1), False)])
def test_a_finished_task_marks_its_lowest_validation_loss(alice_client, alice, tiny_base, losses, hint):
    from jobs.models import Checkpoint

    from .jobs_support import make_card

    job = _job(alice, tiny_base)
    FineTuningJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, trained_tokens=1000)
    for epoch, loss in enumerate(losses, 1):
        Checkpoint.objects.create(
            job=job, epoch=epoch, path=f"/nowhere/{epoch}", metrics={"eval_loss": loss, "current_steps": epoch * 10}
        )
    make_card(job, metrics={"epochs": 3, "final_eval_loss": losses[-1]})
    html = alice_client.get(f"/console/jobs/{job.public_id}/").content.decode()
    best = losses.index(min(losses)) + 1
    row = html.split(f"<tr><td>{best}</td>")[1].split("</tr>")[0]
    assert "lowest" in row and html.count(">lowest</span>") == 1
    assert ('data-testid="overfit-hint"' in html) is hint
    if hint:
        assert "Validation loss was lowest after epoch 1 (0.1040)" in html


def test_task_page_links_to_its_data_by_the_file_id_the_sdk_shows(alice_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    html = alice_client.get(f"/console/jobs/{job.public_id}/").content.decode()
    assert f'href="/console/datasets/{job.training_dataset.public_id}/"' in html
    assert job.training_dataset.public_id.startswith("file-")
    assert alice_client.get(f"/console/datasets/{job.training_dataset.public_id}/").status_code == 200
    assert alice_client.get(f"/console/datasets/{job.training_dataset.pk}/").status_code == 404


def test_the_chart_reads_metrics_with_null_values(alice_client, alice, tiny_base):
    job = _job(alice, tiny_base)
    FineTuningJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    for step, loss, eval_loss in ((1, 2.5, None), (2, 2.0, 1.9), (3, None, None)):
        JobEvent.objects.create(
            job=job,
            type=JobEvent.Type.METRICS,
            data={"current_steps": step, "total_steps": 10, "loss": loss, "eval_loss": eval_loss},
        )
    response = alice_client.get(f"/console/jobs/{job.public_id}/?partial=live", **HTMX)
    assert response.status_code == 200 and 'data-testid="loss-chart"' in response.content.decode()


# ---------------------------------------------------------------- training memory: estimate and refusal


@pytest.fixture
def cpu_node(settings):
    """A CPU training node of 16 GB, whatever this host has."""
    settings.TRAINING_NODE_GPU_MEMORY_GB = 0
    settings.TRAINING_NODE_MEMORY_GB = 16
    return settings


def test_live_estimate_shows_the_training_memory(client, alice, bob, tiny_base, cpu_node):
    from jobs.training.budget import RUNTIME_BYTES

    dataset = make_dataset(alice, chat_lines(10), name="alices-support-chats")
    client.force_login(alice)
    html = client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    memory = services.job_memory_estimate(base_model=tiny_base, dataset=dataset, training_type="lora")
    # the tiny model's weights are a few MB: the process itself and the CPU's pass budget are most of it
    budget = cpu_node.TRAINING_CPU_ACTIVATION_MB * 2**20
    assert budget - 2**20 < memory.activations <= budget and not memory.gradient_checkpointing
    assert RUNTIME_BYTES + budget - 2**20 < memory.total < RUNTIME_BYTES + budget + 64 * 2**20 and memory.fits
    assert f'data-testid="memory">{memory.total_gb:.1f} GB of 16.0 GB on the node' in html
    full = services.job_memory_estimate(base_model=tiny_base, dataset=dataset, training_type="full")
    assert full.total > memory.total and full.optimizer == 2 * full.weights  # fp32 master weights + 2 moments
    cpu_node.TRAINING_NODE_GPU_MEMORY_GB = 24  # a GPU node: its GPU's memory, bf16 frozen weights for LoRA
    html = client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    assert "of 24.0 GB on the node" in html
    gpu = services.job_memory_estimate(base_model=tiny_base, dataset=dataset, training_type="lora")
    assert gpu.weights < memory.weights
    # another user neither sees alice's dataset in the form nor gets an estimate for it
    client.force_login(bob)
    assert dataset.name not in client.get("/console/jobs/create/").content.decode()
    html = client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    assert 'data-testid="memory"' not in html and 'data-testid="tokens"' not in html


def test_a_task_that_cannot_fit_the_node_is_refused_in_the_form(alice_client, alice, tiny_base, cpu_node):
    cpu_node.TRAINING_NODE_MEMORY_GB = 0.3
    dataset = make_dataset(alice, chat_lines())
    need = services.job_memory_estimate(base_model=tiny_base, dataset=dataset, training_type="lora")
    assert not need.fits
    html = alice_client.post("/console/jobs/estimate/", _form(dataset), **HTMX).content.decode()
    assert 'class="form-error">' in html and f"{need.total_gb:.1f} GB of 0.3 GB on the node" in html
    response = alice_client.post("/console/jobs/create/", _form(dataset, suffix="kept", n_epochs="2"))
    html = response.content.decode()
    assert response.status_code == 200 and not FineTuningJob.objects.exists()
    assert f"needs about {need.total_gb:.1f} GB of memory to train (lora" in html and "the 0.3 GB" in html
    assert 'value="kept"' in html and 'value="2"' in html  # what was typed is kept


def test_the_api_refuses_a_task_that_cannot_fit_with_the_estimate(live_server, alice, alice_key, tiny_base, cpu_node):
    cpu_node.TRAINING_NODE_MEMORY_GB = 0.3
    dataset = make_dataset(alice, chat_lines())
    need = services.job_memory_estimate(base_model=tiny_base, dataset=dataset, training_type="full")
    response = httpx.post(
        f"{live_server.url}/api/paas/v4/fine_tuning/jobs",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "tiny-test", "training_file": dataset.public_id, "training_type": "full"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "insufficient_memory" and error["param"] == "training_type"
    assert f"{need.total_gb:.1f} GB" in error["message"] and "0.3 GB of the training node" in error["message"]
    assert not FineTuningJob.objects.exists()
