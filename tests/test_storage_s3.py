"""Files on many machines: the S3 storage, against a real S3-compatible server (moto in server mode).

The test process is the web side, with the S3 storage selected by ``override_settings``; a training worker
started as a subprocess has a run-time folder of its own (no disk shared with the web side) and selects the
same bucket by its environment (``STORAGE_BACKEND=s3``), as a worker on another machine does."""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from common import storage
from console.settings import s3_storage
from datasets.models import Dataset
from jobs import runner
from jobs import services as job_services
from jobs.models import Checkpoint, FineTuningJob, JobStatus
from jobs.training.engine import STATE_FILE
from modelcards.models import BaseModel, FineTunedModel

from . import services
from .jobs_support import TrainingWorker, chat_lines, job_status, make_dataset, wait_for

BUCKET = "console-files"
REGION = "us-east-1"
KEY, SECRET = "test-key", "test-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server on a free port, with the console's bucket made by boto3."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def bucket(s3_server):
    """The bucket's objects (boto3, straight to the server), emptied after the test."""
    import boto3

    resource = boto3.resource(
        "s3", endpoint_url=s3_server, region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    yield resource.Bucket(BUCKET)
    resource.Bucket(BUCKET).objects.all().delete()


@pytest.fixture
def web_media(tmp_path):
    return tmp_path / "web-media"


@pytest.fixture
def s3_selected(s3_server, bucket, web_media):
    """This process (the web side) stores through the bucket; MEDIA_ROOT is a fresh folder nothing may touch."""
    storages = {
        "default": s3_storage(bucket=BUCKET, endpoint_url=s3_server, region=REGION, access_key=KEY, secret_key=SECRET),
        "staticfiles": settings.STORAGES["staticfiles"],
    }
    with override_settings(STORAGES=storages, MEDIA_ROOT=str(web_media)):
        yield bucket


def _keys(bucket, prefix: str = "") -> set[str]:
    return {obj.key for obj in bucket.objects.filter(Prefix=prefix)}


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


# ---------------------------------------------------------------- the folder operations on S3


def test_folders_upload_fetch_list_and_delete_through_the_bucket(s3_selected, tmp_path):
    bucket = s3_selected
    local = _folder(tmp_path / "made", {"a.txt": b"alpha\nbeta\n", "sub/b.bin": b"\x00" * 3000})
    assert not storage.is_local("jobs/1/x") and not storage.folder_exists("jobs/1/x")
    storage.upload_folder(local, "jobs/1/x")
    assert _keys(bucket) == {"jobs/1/x/a.txt", "jobs/1/x/sub/b.bin"}
    assert [(f.relative, f.size) for f in storage.list_folder("jobs/1/x")] == [("a.txt", 11), ("sub/b.bin", 3000)]
    with storage.open_stream("jobs/1/x/a.txt") as fh:  # streamed from the response body, line by line
        assert fh.readline() == b"alpha\n" and fh.read() == b"beta\n"
        fh.seek(2)  # the validator peeks at the head and rewinds: a ranged read from there
        assert fh.read() == b"pha\nbeta\n"

    # Stored again with fewer files: the folder is what was uploaded, nothing stale is left.
    (local / "sub" / "b.bin").unlink()
    storage.upload_folder(local, "jobs/1/x")
    assert _keys(bucket) == {"jobs/1/x/a.txt"}

    fetched = storage.fetch_folder("jobs/1/x", tmp_path / "fetched")
    assert (fetched / "a.txt").read_bytes() == b"alpha\nbeta\n" and not (fetched / "sub").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fetched", "made"]  # no temp folder left behind

    with pytest.raises(storage.StorageError, match="jobs/1/none has no files"):
        storage.fetch_folder("jobs/1/none", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(storage.StorageError, match="jobs/1/x/missing.txt cannot be read"):
        storage.open_stream("jobs/1/x/missing.txt")

    storage.delete_folder("jobs/1/x")
    assert _keys(bucket) == set()


def test_a_local_folder_is_fetched_once_into_the_node_cache(s3_selected, tmp_path):
    bucket = s3_selected
    storage.upload_folder(_folder(tmp_path / "final", {"config.json": b"{}"}), "jobs/2/t/final")
    where = storage.local_path("jobs/2/t/final")
    assert where == Path(settings.VAR_DIR) / "cache" / "storage" / "jobs/2/t/final" and not where.exists()
    assert storage.local_folder("jobs/2/t/final") == where and (where / "config.json").read_bytes() == b"{}"
    bucket.objects.all().delete()
    assert storage.local_folder("jobs/2/t/final") == where  # from the cache: the bucket is not asked again
    storage.forget_local("jobs/2/t/final")
    assert not where.exists()
    with pytest.raises(storage.StorageError):
        storage.local_folder("jobs/2/t/final")


def test_s3_without_a_bucket_refuses_to_start(tmp_path):
    from .test_admin_and_settings import _run

    result = _run({"STORAGE_BACKEND": "s3", "AWS_STORAGE_BUCKET_NAME": "", "CONSOLE_VAR_DIR": str(tmp_path)}, "check")
    assert result.returncode != 0 and "AWS_STORAGE_BUCKET_NAME" in result.stderr
    result = _run({"STORAGE_BACKEND": "ftp", "CONSOLE_VAR_DIR": str(tmp_path)}, "check")
    assert result.returncode != 0 and "STORAGE_BACKEND must be filesystem or s3" in result.stderr


# ---------------------------------------------------------------- resuming from the bucket


def _running_job(owner, base, dataset) -> FineTuningJob:
    return FineTuningJob.objects.create(
        owner=owner,
        base_model=base,
        training_dataset=dataset,
        fine_tuned_model="ft:tiny-test:s3:resume",
        status=JobStatus.RUNNING,
        attempts=2,
        worker="here:1",
        resolved_hyperparameters={"n_epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
    )


@pytest.mark.django_db(transaction=True)
def test_resume_fetches_the_checkpoint_and_one_that_cannot_be_fetched_fails_loudly(
    s3_selected, alice, tiny_base, tmp_path
):
    bucket = s3_selected
    job = _running_job(alice, tiny_base, make_dataset(alice, chat_lines(8)))
    name = f"{job_services.job_storage_name(job)}/checkpoints/step-3"
    storage.upload_folder(_folder(tmp_path / "ckpt", {STATE_FILE: b"state", "trainable.safetensors": b"w"}), name)
    Checkpoint.objects.create(job=job, epoch=1, step=3, path=name, metrics={"current_steps": 3})

    fetched = runner._resume_from(job, scratch=tmp_path / "scratch")
    assert fetched == tmp_path / "scratch" / "resume" and (fetched / STATE_FILE).read_bytes() == b"state"

    bucket.objects.filter(Prefix=name).delete()  # the recorded checkpoint's objects are gone
    assert runner.job_run(job=FineTuningJob.objects.select_related("base_model").get(pk=job.pk)) == "failed"
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_code == "checkpoint_unreadable"
    assert "cannot resume" in job.error_message and name in job.error_message and "has no files" in job.error_message
    assert not job.events.filter(type="metrics").exists()  # it never trained from the start
    assert not job_services.job_scratch_dir(job).exists()


# ---------------------------------------------------------------- a task on a worker that shares no disk


@pytest.fixture
def s3_worker(s3_selected, s3_server, django_db_blocker, tmp_path_factory):
    """A training worker on "another machine": its own CONSOLE_VAR_DIR and MEDIA_ROOT, the bucket by env.

    It takes the default queue too (validation, preparing a task), and the suite's own workers, which store
    on this process's filesystem, stop taking those queues meanwhile."""
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    node = tmp_path_factory.mktemp("s3-node")
    env = {
        "STORAGE_BACKEND": "s3",
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_ENDPOINT_URL": s3_server,
        "AWS_S3_REGION_NAME": REGION,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
    }
    worker = TrainingWorker(db_name, name="s3node", queues="default,training", var_dir=node, env=env)
    with services.consumers_paused({"default", "training"}):
        yield worker.ensure()
        worker.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_task_trains_on_a_worker_that_shares_no_disk_with_the_web_side(
    s3_worker, s3_selected, sdk, alice, bob, tiny_base, tiny_model_dir, web_media, client
):
    bucket = s3_selected
    BaseModel.objects.filter(pk=tiny_base.pk).update(public_name=str(tiny_model_dir))  # stands in for a hub id
    body = "\n".join(json.dumps(line) for line in chat_lines(24)).encode() + b"\n"
    uploaded = sdk.files.create(file=("widgets.jsonl", body), purpose="fine-tune")
    dataset_key = f"datasets/{alice.pk}/"
    assert any(key.startswith(dataset_key) and key.endswith(".jsonl") for key in _keys(bucket, dataset_key))
    wait_for(
        lambda: sdk.files.list().data and _file_status(uploaded.id) in {"ready", "invalid"},
        timeout=120,
        what="the worker to validate the upload from the bucket",
    )
    assert _file_status(uploaded.id) == "ready", Dataset.objects.get(public_id=uploaded.id).status_message

    job = sdk.fine_tuning.jobs.create(
        model="tiny-test",
        training_file=uploaded.id,
        suffix="s3",
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 3},
    )
    wait_for(lambda: job_status(job.id) in {"succeeded", "failed", "cancelled"}, timeout=240, what="the task to end")
    row = FineTuningJob.objects.get(public_id=job.id)
    assert row.status == "succeeded", (row.error_code, row.error_message)

    folder = f"jobs/{alice.pk}/{job.id}"
    keys = _keys(bucket, folder + "/")
    assert {
        f"{folder}/checkpoints/epoch-1/adapter_model.safetensors",
        f"{folder}/checkpoints/epoch-2/adapter_config.json",
        f"{folder}/final/adapter_model.safetensors",
        f"{folder}/final/adapter_config.json",
    } <= keys
    # The task succeeded: its checkpoints are models now, without the resume state, in the bucket too. The worker
    # deletes it once the success has committed, so the status can be read a moment before the bucket follows.
    wait_for(
        lambda: not {k for k in _keys(bucket, folder + "/") if k.endswith((STATE_FILE, "trainable.safetensors"))},
        timeout=30,
        what="the resume state to leave the bucket after the success",
    )
    assert {c.path for c in Checkpoint.objects.filter(job=row)} == {
        f"{folder}/checkpoints/epoch-1",
        f"{folder}/checkpoints/epoch-2",
    }
    card = FineTunedModel.objects.get(job=row)
    assert card.path == f"{folder}/final" and row.output_dir == folder
    # Nothing came through this process's disk, and the worker's scratch went with the task.
    assert _files_under(web_media) == [] and _files_under(s3_worker.var_dir / "media") == []
    assert not (Path(settings.VAR_DIR) / "scratch" / "jobs" / job.id).exists()
    scratch = s3_worker.var_dir / "scratch" / "jobs"
    assert scratch.is_dir() and not (scratch / job.id).exists()  # it trained there, and cleaned up

    # The web side streams the download from the bucket.
    client.force_login(alice)
    response = client.get(f"/console/models/{card.code}/download/")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = {Path(n).name for n in archive.namelist()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names and "training_result.json" not in names
    config = json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("adapter_config.json")))
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    weights = next(n for n in archive.namelist() if n.endswith("adapter_model.safetensors"))
    assert archive.read(weights) == bucket.Object(f"{folder}/final/adapter_model.safetensors").get()["Body"].read()

    client.force_login(bob)  # another user sees none of it
    assert client.get(f"/console/models/{card.code}/download/").status_code == 404

    client.force_login(alice)
    client.post(f"/console/models/{card.code}/delete/")
    assert not _keys(bucket, f"{folder}/final/")


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _file_status(file_id: str) -> str:
    return Dataset.objects.values_list("status", flat=True).get(public_id=file_id)


@pytest.mark.django_db
def test_a_serving_node_fetches_a_fine_tune_from_the_bucket_before_it_serves(s3_selected, alice, tiny_base, tmp_path):
    from deployments.targets import prepare, target_of

    name = f"jobs/{alice.pk}/ftjob-served/final"
    storage.upload_folder(
        _folder(tmp_path / "final", {"adapter_config.json": b"{}", "adapter.safetensors": b"w"}), name
    )
    tune = FineTunedModel.objects.create(
        code="tiny-test:alice:s3", owner=alice, base_model=tiny_base, method="sft", training_type="lora", path=name
    )
    target = target_of(tune)
    assert target.adapter == storage.local_path(name) and not target.adapter.exists()  # nothing fetched yet
    prepare(target, merge=False)  # a runtime that loads adapters itself (vLLM): fetched into this node's cache
    assert (target.adapter / "adapter_config.json").read_bytes() == b"{}"
    assert str(target.adapter).startswith(str(Path(settings.VAR_DIR) / "cache" / "storage"))
    storage.forget_local(name)
