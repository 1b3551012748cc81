"""Validation through a real Celery worker: queued on commit, live progress from real bytes read."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import Dataset, Status
from datasets.services import dataset_delete

from .datasets_support import sample

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def wait_final(pk: int, timeout: float = 120) -> Dataset:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset = Dataset.objects.get(pk=pk)
        if dataset.is_final:
            return dataset
        time.sleep(0.1)
    raise AssertionError(f"dataset {pk} still {Dataset.objects.get(pk=pk).status} after {timeout} s")


def test_uploaded_samples_are_validated_by_the_worker(celery_worker, alice_client, alice):
    pks = []
    for name in ("chat.jsonl", "broken_chat.jsonl"):
        with open(sample(name), "rb") as fh:
            response = alice_client.post("/console/datasets/upload/", {"file": fh, "category": ""})
        assert response.status_code == 302
        pks.append(Dataset.objects.latest("id").pk)
    try:
        good, bad = (wait_final(pk) for pk in pks)
        assert good.status == Status.READY and good.examples == 13 and good.tokens > 0 and good.category == "chat"
        assert bad.status == Status.INVALID and bad.error_count == 8
        assert sorted(bad.issues.filter(severity="error").values_list("line", flat=True).distinct()) == [
            3,
            4,
            5,
            7,
            8,
            9,
            11,
            12,
        ]
    finally:
        for dataset in Dataset.objects.filter(pk__in=pks):
            dataset_delete(dataset=dataset)


def test_live_progress_comes_from_the_worker(celery_worker, alice_client, alice):
    row = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Explain the water cycle in a few sentences, please. " * 3},
            {"role": "assistant", "content": "Water evaporates, condenses into clouds and falls. " * 6},
        ]
    }
    lines = []
    for i in range(40_000):
        row["messages"][1]["content"] = f"Question {i}: explain the water cycle, please. " * 3
        lines.append(json.dumps(row))
    body = ("\n".join(lines) + "\n").encode()
    response = alice_client.post(
        "/console/datasets/upload/", {"file": SimpleUploadedFile("big.jsonl", body), "category": "chat"}
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get(owner=alice)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 180
        final = None
        while time.monotonic() < deadline:
            live = alice_client.get(f"/console/datasets/{dataset.public_id}/live/", HTTP_HX_REQUEST="true")
            if live.status_code == 286:
                final = live.content.decode()
                break
            match = re.search(r'aria-valuenow="(\d+)"', live.content.decode())
            seen.append(int(match.group(1)))
            time.sleep(0.05)
        assert final is not None, seen
        assert any(0 < pct < 100 for pct in seen), seen  # real intermediate progress, not a jump
        assert seen == sorted(seen)
        dataset.refresh_from_db()
        assert dataset.status == Status.READY and dataset.examples == 40_000 and dataset.bytes_read == len(body)
        assert f"{dataset.tokens:,}" in final
    finally:
        dataset_delete(dataset=Dataset.objects.get(pk=dataset.pk))
