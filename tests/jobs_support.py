"""Fixtures for fine-tuning tests: a tiny model, ready datasets, a training worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from jobs.models import BaseModel, FineTuningJob

from . import services


def chat_lines(n: int = 24) -> list[dict]:
    """A small memorisable chat set: the tiny model's loss falls on it quickly."""
    colours = ["red", "green", "blue", "amber"]
    return [
        {
            "messages": [
                {"role": "user", "content": f"What colour is widget {i}?"},
                {"role": "assistant", "content": f"Widget {i} is {colours[i % 4]}."},
            ]
        }
        for i in range(n)
    ]


def dpo_lines(n: int = 16) -> list[dict]:
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"Greet customer {i}."}]},
            "preferred_output": [{"role": "assistant", "content": f"Hello customer {i}, welcome!"}],
            "non_preferred_output": [{"role": "assistant", "content": "What do you want?"}],
        }
        for i in range(n)
    ]


def make_dataset(owner, lines: list[dict], *, category: str = "chat", status: str = "ready", name: str = "train"):
    from datasets.models import Dataset

    body = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n"
    dataset = Dataset(
        owner=owner,
        name=name,
        filename=f"{name}.jsonl",
        category=category,
        status=status,
        examples=len(lines),
        lines=len(lines),
        tokens=40 * len(lines),
        text_tokens=40 * len(lines),
        bytes=len(body.encode()),
        longest_example_tokens=60,
    )
    dataset.file.save(f"{name}.jsonl", ContentFile(body.encode()), save=False)
    dataset.save()
    return dataset


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from .tiny_model import build_tiny_model

    return Path(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture
def tiny_base(db, tiny_model_dir) -> BaseModel:
    return BaseModel.objects.create(
        code="tiny-test",
        display_name="Tiny test model",
        family="test",
        modality="text",
        methods=["sft", "dpo"],
        training_types=["lora", "full"],
        public_pool=True,
        context_length=256,
        training_price=Decimal("0.0100"),
        weights_source="local_dir",
        weights_location=str(tiny_model_dir),
        sort_order=1,
    )


class TrainingWorker:
    """A real Celery worker on the training queue that a test may kill and restart.

    ``var_dir`` gives it a run-time folder of its own (``CONSOLE_VAR_DIR``, ``MEDIA_ROOT`` and its log under
    it): a worker on another machine, sharing no disk with the test process; ``env`` adds settings (a storage)."""

    def __init__(
        self,
        db_name: str,
        *,
        name: str = "trainer",
        queues: str = "training",
        var_dir: Path | None = None,
        env: dict | None = None,
    ):
        self.db_name, self.restarts = db_name, 0
        self.proc: subprocess.Popen | None = None
        self.name, self.queues, self.var_dir, self.env = name, queues, var_dir, env or {}

    def ensure(self) -> TrainingWorker:
        if self.proc is None or self.proc.poll() is not None:
            extra_env = {
                "JOB_HEARTBEAT_INTERVAL": "1",
                "CONSOLE_PRELOAD_TRAINING": "1",
                # a checkpoint about every second: mid-epoch resumes are exercised
                "TRAINING_CHECKPOINT_MINUTES": "0.02",
            }
            log_path = None
            if self.var_dir is not None:
                from django.conf import settings

                self.var_dir.mkdir(parents=True, exist_ok=True)
                extra_env.update(
                    CONSOLE_VAR_DIR=str(self.var_dir),
                    MEDIA_ROOT=str(self.var_dir / "media"),
                    REDIS_URL=settings.REDIS_URL,
                    SECRET_KEY=settings.SECRET_KEY,
                )
                log_path = self.var_dir / f"worker-{self.name}.log"
            self.proc = services.start_worker(
                self.db_name,
                queues=self.queues,
                name=f"{self.name}{self.restarts}",
                extra_env={**extra_env, **self.env},
                log_path=log_path,
            )
            self.restarts += 1
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as a crash or the OOM killer would."""
        assert self.proc is not None, "start() the worker first"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> float:
        """SIGTERM the worker's process group, as Ctrl-C under ./run up or systemctl stop does; seconds to exit."""
        assert self.proc is not None, "start() the worker first"
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        services.stop(self.proc)


@pytest.fixture(scope="session")
def _training_worker(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        worker = TrainingWorker(connection.settings_dict["NAME"])
    yield worker
    worker.stop()


@pytest.fixture
def training_worker(_training_worker, celery_worker):
    """Both workers: default (validation, prepare) and training.

    Afterwards every unfinished task is cancelled and the worker left idle, so that
    a task of one test never trains on into the next."""
    yield _training_worker.ensure()
    from django.utils import timezone

    FineTuningJob.objects.exclude(status__in=["succeeded", "failed", "cancelled"]).update(
        cancel_requested_at=timezone.now()
    )
    FineTuningJob.objects.filter(status__in=["validating_files", "queued"]).update(status="cancelled")
    wait_for(
        lambda: not FineTuningJob.objects.filter(status="running").exists() or _training_worker.proc.poll() is not None,
        timeout=60,
        what="the training worker to stop its task",
    )


def wait_for(predicate, timeout: float = 120, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def job_status(public_id: str) -> str:
    return FineTuningJob.objects.values_list("status", flat=True).get(public_id=public_id)


def make_card(job: FineTuningJob, path: str = "/nowhere", **extra):
    """The model card a succeeded task would have made, linked to its task."""
    from modelcards.models import FineTunedModel

    defaults = {"method": job.method, "training_type": job.training_type}
    card = FineTunedModel.objects.create(
        code=job.fine_tuned_model, owner=job.owner, base_model=job.base_model, path=path, **{**defaults, **extra}
    )
    FineTuningJob.objects.filter(pk=job.pk).update(result=card)
    job.result = card
    return card
