"""Helpers for the datasets tests: sample paths, uploads validated to the end, a validator run on bytes."""

from __future__ import annotations

import io
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample(name: str) -> Path:
    return SAMPLES / name


def validate_all(owner) -> None:
    """Validate every upload of ``owner`` here, or wait for a worker that got there first.

    In a transactional test the upload's commit also queues its validation, and a Celery worker
    started by another test module may claim it before the test does.
    """
    from datasets.models import Dataset
    from datasets.services import dataset_validate

    for dataset in Dataset.objects.filter(owner=owner):
        dataset_validate(dataset_id=dataset.pk)
    deadline = time.monotonic() + 60
    while Dataset.objects.filter(owner=owner).exclude(status__in=["ready", "invalid"]).exists():
        assert time.monotonic() < deadline, "validation did not finish"
        time.sleep(0.1)


def uploaded(client, name: str, category: str = ""):
    """Upload a sample through the console's form and return it validated."""
    from datasets.models import Dataset

    with open(sample(name), "rb") as fh:
        response = client.post("/console/datasets/upload/", {"file": fh, "category": category, "name": ""})
    assert response.status_code == 302, response.content[:2000]
    dataset = Dataset.objects.latest("id")
    validate_all(dataset.owner)
    dataset.refresh_from_db()
    return dataset


def tokenizer():
    from modelcards.models import BaseModel
    from modelcards.weights import load_tokenizer

    return load_tokenizer(BaseModel.objects.get(is_default=True))


def run_validator(data: bytes, category: str | None = None, tok=None, **options):
    from datasets.validation import Validator

    report = io.StringIO()
    result = Validator(
        category=category,
        tokenizer=tok,
        context_length=options.pop("context_length", 2048),
        advised_min_examples=options.pop("advised_min_examples", 300),
        report=report,
        **options,
    ).run(io.BytesIO(data))
    return result, report.getvalue()


def errors_by_line(result) -> dict[int | None, list[tuple[str, str]]]:
    found: dict[int | None, list[tuple[str, str]]] = {}
    for issue in result.errors:
        found.setdefault(issue.line, []).append((issue.path, issue.message))
    return found
