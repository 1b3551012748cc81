"""The openai SDK's fine-tuning surface, unchanged client code, at the zhipuai base URL (issue 19, item 1): files,
jobs (OpenAI's ``method`` shape, seed, metadata, list filters, cancel, events), checkpoints and models, with the
real ``openai`` package against a live server; the zhipuai SDK beside it as before."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob as OpenAIJob
from openai.types.fine_tuning import FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from common import storage
from jobs.models import Checkpoint, FineTunedModel, FineTuningJob, JobEvent

from .datasets_support import sample, validate_all
from .jobs_support import chat_lines, dpo_lines, job_status, make_dataset, wait_for
from .openai_formats_support import jsonl, openai_chat_lines, openai_preference_lines

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def oai(live_server, alice_key) -> OpenAI:
    return OpenAI(api_key=alice_key, base_url=f"{live_server.url}/api/paas/v4", max_retries=0)


def _raw(live_server, alice_key, path: str, **params) -> httpx.Response:
    return httpx.get(
        f"{live_server.url}/api/paas/v4/{path}", params=params, headers={"Authorization": f"Bearer {alice_key}"}
    )


def test_files_create_list_retrieve_content_delete(oai, alice, alice_media):
    with open(sample("chat.jsonl"), "rb") as fh:
        created = oai.files.create(file=fh, purpose="fine-tune")
    assert created.id.startswith("file-") and created.filename == "chat.jsonl" and created.purpose == "fine-tune"
    assert created.bytes == sample("chat.jsonl").stat().st_size and created.status == "uploaded"
    validate_all(alice)
    fetched = oai.files.retrieve(created.id)
    assert fetched.id == created.id and fetched.status == "processed"
    listed = oai.files.list(purpose="fine-tune", limit=10)
    assert [f.id for f in listed.data] == [created.id] and not listed.has_more
    assert oai.files.content(created.id).content == sample("chat.jsonl").read_bytes()
    deleted = oai.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted and deleted.object == "file"
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(created.id)


def test_create_in_openais_shape_gives_a_job_the_sdk_parses(oai, sdk, alice, alice_key, tiny_base, live_server):
    training = make_dataset(alice, chat_lines(24))
    validation = make_dataset(alice, chat_lines(4), name="valid")
    job = oai.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=training.public_id,
        validation_file=validation.public_id,
        suffix="oai-bot",
        seed=1234,
        metadata={"team": "support", "run": "a"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}},
        },
    )
    row = FineTuningJob.objects.get(public_id=job.id)
    assert (row.method, row.training_type, row.seed, row.metadata) == (
        "sft",
        "lora",
        1234,
        {"team": "support", "run": "a"},
    )
    assert (
        row.resolved_hyperparameters["n_epochs"] == 2
        and row.resolved_hyperparameters["learning_rate_multiplier"] == 0.5
    )
    assert row.validation_dataset_id == validation.pk and row.suffix == "oai-bot"
    # The wire object validates as the SDK's own type, strictly (not only the SDK's lenient construction).
    raw = _raw(live_server, alice_key, f"fine_tuning/jobs/{job.id}").json()
    strict = OpenAIJob.model_validate(raw)
    assert strict.method.type == "supervised" and strict.method.supervised.hyperparameters.n_epochs == 2
    assert strict.seed == 1234 and strict.metadata == {"team": "support", "run": "a"}
    assert strict.organization_id == f"user-{alice.pk}" and strict.integrations == []
    # queued: no finish to estimate yet (a training worker that another module started may have taken it already)
    assert strict.estimated_finish is None or raw["status"] == "running"
    assert strict.user_provided_suffix == "oai-bot"
    assert raw["training_type"] == "lora"  # our extension stays

    retrieved = oai.fine_tuning.jobs.retrieve(job.id)
    assert retrieved.id == job.id and retrieved.training_file == training.public_id
    assert retrieved.validation_file == validation.public_id and retrieved.model == "tiny-test"

    # DPO in OpenAI's shape, beta included; no seed given: one is chosen and recorded.
    pairs = make_dataset(alice, dpo_lines(12), category="dpo", name="pairs")
    dpo = oai.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=pairs.public_id,
        extra_body={"training_type": "full"},
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 1}}},
    )
    dpo_row = FineTuningJob.objects.get(public_id=dpo.id)
    assert (dpo_row.method, dpo_row.training_type) == ("dpo", "full")
    assert dpo_row.resolved_hyperparameters["beta"] == 0.25 and dpo.method.dpo.hyperparameters.beta == 0.25
    assert dpo.seed == dpo_row.seed and isinstance(dpo_row.seed, int) and dpo.metadata is None
    assert (
        OpenAIJob.model_validate(_raw(live_server, alice_key, f"fine_tuning/jobs/{dpo.id}").json()).seed == dpo_row.seed
    )

    # The zhipuai SDK's create, as before: method as a string, hyperparameters at the top level.
    zhipu = sdk.fine_tuning.jobs.create(
        model="tiny-test", training_file=pairs.public_id, hyperparameters={"n_epochs": 1}, extra_body={"method": "dpo"}
    )
    zhipu_row = FineTuningJob.objects.get(public_id=zhipu.id)
    assert zhipu_row.method == "dpo" and zhipu_row.resolved_hyperparameters["beta"] == 0.1
    assert sdk.fine_tuning.jobs.retrieve(zhipu.id).training_file == pairs.public_id

    # List: newest first, cursor pages, the metadata filter (all pairs must match; metadata=null: none).
    page = oai.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == [zhipu.id, dpo.id] and page.has_more
    assert [j.id for j in oai.fine_tuning.jobs.list(after=dpo.id, limit=10).data] == [job.id]
    assert [j.id for j in oai.fine_tuning.jobs.list()] == [zhipu.id, dpo.id, job.id]  # the SDK's auto-paging
    assert [j.id for j in oai.fine_tuning.jobs.list(metadata={"team": "support"}).data] == [job.id]
    assert [j.id for j in oai.fine_tuning.jobs.list(metadata={"team": "support", "run": "b"}).data] == []
    no_metadata = _raw(live_server, alice_key, "fine_tuning/jobs", metadata="null").json()["data"]
    assert [j["id"] for j in no_metadata] == [zhipu.id, dpo.id]

    # Cancel and the events, through the openai SDK.
    cancelled = oai.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and job_status(job.id) == "cancelled"
    events = oai.fine_tuning.jobs.list_events(job.id, limit=1)
    assert events.data[0].object == "fine_tuning.job.event" and events.data[0].message == "Cancelled before it started."
    older = oai.fine_tuning.jobs.list_events(job.id, after=events.data[0].id, limit=10)
    # the oldest first event; a Celery worker that another module started may have checked the files meanwhile
    assert [e.message for e in older.data][-1] == "Task created; checking the files."
    assert oai.fine_tuning.jobs.checkpoints.list(job.id).data == []  # it never trained


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"type": "reinforcement", "reinforcement": {}}, "Reinforcement fine-tuning is not available"),
        ({"type": "supervised", "dpo": {"hyperparameters": {"beta": 0.1}}}, "method.dpo does not go with"),
        ({"type": "unsupervised"}, "method.type must be supervised or dpo"),
        ({"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.3}}}, "beta is a hyperparameter of DPO"),
        ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 9}}}, "beta must be between 0.01 and 2.0"),
        ({"type": "dpo", "dpo": {"hyperparameters": []}}, "method.dpo.hyperparameters must be an object"),
    ],
)
def test_a_method_that_cannot_be_honoured_is_refused_with_why(oai, alice, tiny_base, method, message):
    dataset = make_dataset(
        alice,
        dpo_lines(12) if method.get("type") == "dpo" else chat_lines(),
        category="dpo" if method.get("type") == "dpo" else "chat",
    )
    with pytest.raises(openai.BadRequestError) as exc:
        oai.fine_tuning.jobs.create(model="tiny-test", training_file=dataset.public_id, method=method)
    error = exc.value.body
    assert message in error["message"], error
    assert error["param"] in {"method", "hyperparameters", "beta"} and not FineTuningJob.objects.exists()


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"seed": -1}, "seed", "seed must be a whole number from 0 to 2,147,483,647"),
        ({"seed": "abc"}, "seed", "seed must be a whole number"),
        ({"metadata": {"k": 5}}, "metadata", "The metadata value of k must be a string"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16 keys"),
        (
            {
                "hyperparameters": {"n_epochs": 3},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
            },
            "hyperparameters",
            "give it once, in method",
        ),
        ({"integrations": [{"type": "wandb", "wandb": {"project": "x"}}]}, "integrations", "not available"),
    ],
)
def test_bad_seed_metadata_or_doubled_hyperparameters_are_refused(
    live_server, alice_key, alice, tiny_base, extra, param, message
):
    dataset = make_dataset(alice, chat_lines())
    response = httpx.post(
        f"{live_server.url}/api/paas/v4/fine_tuning/jobs",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model": "tiny-test", "training_file": dataset.public_id, **extra},
    )
    assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == param, error
    assert not FineTuningJob.objects.exists()


def test_models_retrieve_and_delete(oai, alice, bob, tiny_base, tmp_path):
    base = oai.models.retrieve("smollm2-135m-instruct")
    assert base.id == "smollm2-135m-instruct" and base.object == "model" and base.owned_by == "system"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")
    with pytest.raises(openai.PermissionDeniedError) as exc:
        oai.models.delete("tiny-test")
    assert "only your own fine-tuned models can be deleted" in exc.value.body["message"]

    from .jobs_support import make_card

    dataset = make_dataset(alice, chat_lines())
    jobs = [
        FineTuningJob.objects.create(
            owner=owner,
            base_model=tiny_base,
            training_dataset=dataset,
            fine_tuned_model=f"ft:tiny-test:{owner.username}:000001",
            status="succeeded",
        )
        for owner in (alice, bob)
    ]
    final = f"jobs/{alice.pk}/{jobs[0].public_id}/final"
    (tmp_path / "adapter_config.json").write_text("{}")
    storage.save_file(tmp_path / "adapter_config.json", f"{final}/adapter_config.json")
    mine = make_card(jobs[0], path=final)
    theirs = make_card(jobs[1])
    fetched = oai.models.retrieve(mine.code)
    assert fetched.id == mine.code and fetched.owned_by == "alice" and fetched.model_extra["parent"] == "tiny-test"
    assert mine.code in [m.id for m in oai.models.list()] and theirs.code not in [m.id for m in oai.models.list()]
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve(theirs.code)  # another user's fine-tune does not exist for alice
    with pytest.raises(openai.NotFoundError):
        oai.models.delete(theirs.code)
    deleted = oai.models.delete(mine.code)
    assert deleted.id == mine.code and deleted.deleted and deleted.object == "model"
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.deleted_at is not None and theirs.deleted_at is None  # through the card's own delete service
    assert not storage.folder_exists(mine.path)
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve(mine.code)


def _upload(oai, alice, name: str, lines: list[dict]) -> str:
    """A file in OpenAI's format through ``client.files.create``, validated to the end."""
    created = oai.files.create(file=(name, jsonl(lines)), purpose="fine-tune")
    validate_all(alice)
    assert oai.files.retrieve(created.id).status == "processed", oai.files.retrieve(created.id).status_details
    return created.id


@pytest.mark.worker
def test_openai_sdk_trains_a_task_lists_its_checkpoints_and_deletes_the_model(
    oai, alice, tiny_base, alice_media, training_worker
):
    # OpenAI's chat format as is: a tool call, content as text parts, a turn of weight 0 kept as context only.
    training_file = _upload(oai, alice, "openai_chat.jsonl", openai_chat_lines(24))
    job = oai.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=training_file,
        suffix="ckpt",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 3}},
        },
    )
    wait_for(lambda: job_status(job.id) in {"succeeded", "failed", "cancelled"}, timeout=180, what="the task")
    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:tiny-test:ckpt:") and done.seed == 7 and done.trained_tokens > 0

    page = oai.fine_tuning.jobs.checkpoints.list(job.id)
    rows = {c.step: c for c in Checkpoint.objects.filter(job__public_id=job.id)}
    assert [c.object for c in page.data] == ["fine_tuning.job.checkpoint"] * 2 and not page.has_more
    epoch_ends = [
        e.data
        for e in JobEvent.objects.filter(job__public_id=job.id, type="metrics").order_by("id")
        if e.data.get("eval_loss") is not None
    ]
    assert len(epoch_ends) == 2
    # Newest first; each names the fine-tune and its step, with the losses logged at that epoch's end.
    for checkpoint, logged in zip(page.data, reversed(epoch_ends), strict=True):
        assert isinstance(checkpoint, FineTuningJobCheckpoint) and checkpoint.fine_tuning_job_id == job.id
        assert checkpoint.step_number == logged["current_steps"] and checkpoint.step_number in rows
        assert checkpoint.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        assert checkpoint.metrics.valid_loss == checkpoint.metrics.full_valid_loss == logged["eval_loss"] > 0
        assert (
            checkpoint.metrics.train_loss == logged["loss"] > 0 and checkpoint.metrics.step == logged["current_steps"]
        )
        assert storage.folder_exists(rows[checkpoint.step_number].path)
    assert page.data[0].step_number > page.data[1].step_number
    # Every event, warnings included, validates as the SDK's own type, strictly.
    from jobs.states import job_event

    job_event(job=FineTuningJob.objects.get(public_id=job.id), level="warning", message="A warning.")
    raw = httpx.get(
        f"{str(oai.base_url).rstrip('/')}/fine_tuning/jobs/{job.id}/events",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {oai.api_key}"},
    ).json()["data"]
    events = [FineTuningJobEvent.model_validate(event) for event in raw]
    assert events[0].level == "warn" and {e.type for e in events} == {"message", "metrics"}
    assert {e.level for e in events} == {"info", "warn"}
    second = oai.fine_tuning.jobs.checkpoints.list(job.id, after=page.data[0].id, limit=5)
    assert [c.id for c in second.data] == [page.data[1].id]

    assert done.fine_tuned_model in [m.id for m in oai.models.list()]
    assert oai.models.retrieve(done.fine_tuned_model).model_extra["fine_tuning_job"] == job.id
    assert oai.models.delete(done.fine_tuned_model).deleted
    assert FineTunedModel.objects.get(code=done.fine_tuned_model).deleted_at is not None
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve(done.fine_tuned_model)

    # OpenAI's preference format as is, trained by DPO in OpenAI's method shape.
    pairs = _upload(oai, alice, "openai_preference.jsonl", openai_preference_lines(12))
    dpo = oai.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=pairs,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 4}}},
    )
    wait_for(lambda: job_status(dpo.id) in {"succeeded", "failed", "cancelled"}, timeout=180, what="the DPO task")
    trained = oai.fine_tuning.jobs.retrieve(dpo.id)
    assert trained.status == "succeeded", trained.error
    assert trained.method.type == "dpo" and trained.method.dpo.hyperparameters.beta == 0.2
    assert len(oai.fine_tuning.jobs.checkpoints.list(dpo.id).data) == 1


def test_a_running_task_says_when_it_should_finish(oai, alice, tiny_base):
    from jobs import services

    job = services.job_create(user=alice, base_model=tiny_base, training_dataset=make_dataset(alice, chat_lines()))[0]
    assert oai.fine_tuning.jobs.retrieve(job.public_id).estimated_finish is None  # not running: unknown
    FineTuningJob.objects.filter(pk=job.pk).update(status="running", progress={"remaining_seconds": 120})
    assert oai.fine_tuning.jobs.retrieve(job.public_id).estimated_finish is None  # no metrics logged yet
    logged = JobEvent.objects.create(job=job, type="metrics", message="step 3/9", data={"remaining_seconds": 120})
    assert oai.fine_tuning.jobs.retrieve(job.public_id).estimated_finish == int(logged.created_at.timestamp() + 120)
