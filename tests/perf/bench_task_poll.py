"""The live partial of a long task's page, polled every 2 s: time per poll.

Run on demand (not part of the test run):

    .venv/bin/python tests/perf/bench_task_poll.py [--events 21600] [--polls 20]

Builds a running task with ``--events`` metrics events (21,600 is six hours at
one a second) in a database under var/bench-poll/ (or DATABASE_URL with
BENCH_KEEP_DB=1), then times the real view, through Django's test client, as
the page polls it. The baseline, in the same run, is the way the view read the
metrics before: every event's whole JSON document, decoded in Python.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-poll"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
if os.environ.get("BENCH_KEEP_DB") is None:
    os.environ.pop("DATABASE_URL", None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=21_600)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()

    import django

    Path(os.environ["CONSOLE_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    django.setup()
    from unittest import mock

    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts.models import User
    from datasets.models import Dataset
    from jobs import charts
    from jobs.models import BaseModel, FineTuningJob, JobEvent

    call_command("migrate", verbosity=0)
    user, _ = User.objects.get_or_create(username="bench-poll")
    FineTuningJob.objects.filter(owner=user).delete()
    Dataset.objects.filter(owner=user).delete()
    dataset = Dataset(owner=user, name="bench", filename="bench.jsonl", status="ready", category="chat", examples=1)
    dataset.file.save("bench.jsonl", ContentFile(b"{}\n"), save=False)
    dataset.save()
    base = BaseModel.objects.get(is_default=True)
    job = FineTuningJob.objects.create(
        owner=user,
        base_model=base,
        training_dataset=dataset,
        status="running",
        fine_tuned_model=f"ft:bench:{time.time_ns()}",
    )
    JobEvent.objects.bulk_create(
        [
            JobEvent(
                job=job,
                type="metrics",
                level="info",
                message="m",
                data={
                    "epoch": i / 1000,
                    "current_steps": i,
                    "total_steps": args.events,
                    "loss": 2 - i / (2 * args.events),
                    "eval_loss": 1.0 if i % 1000 == 0 else None,
                    "elapsed_time": "00:00:01",
                    "remaining_time": "00:00:01",
                    "trained_tokens": i * 100,
                    "learning_rate": 1e-4,
                    "tokens_per_second": 400.0,
                    "elapsed_seconds": 1.0,
                    "remaining_seconds": 1.0,
                },
            )
            for i in range(1, args.events + 1)
        ],
        batch_size=2000,
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    url = f"/console/jobs/{job.public_id}/?partial=live"

    def poll() -> tuple[float, bytes]:
        started = time.perf_counter()
        response = client.get(url, HTTP_HX_REQUEST="true")
        assert response.status_code == 200, (response.status_code, response.content[:300])
        return time.perf_counter() - started, response.content

    def whole_json(job):  # the baseline: how the view read the metrics before
        return list(JobEvent.objects.filter(job=job, type="metrics").order_by("id").values_list("data", flat=True))

    def run(label: str) -> tuple[float, bytes]:
        poll()  # warm
        times, content = [], b""
        for _ in range(args.polls):
            seconds, content = poll()
            times.append(seconds)
        median = statistics.median(times)
        print(f"{label:>9}: median {median * 1000:.1f} ms per poll over {args.polls} polls")
        return median, content

    print(f"{connection.vendor}, {args.events:,} metrics events")
    ours, ours_page = run("ours")
    with mock.patch.object(charts, "chart_metrics", whole_json):
        baseline, base_page = run("baseline")
    same = ours_page == base_page
    print(f"ratio: {baseline / ours:.2f}x faster; same page: {same}")
    FineTuningJob.objects.filter(owner=user).delete()
    for leftover in Dataset.objects.filter(owner=user):
        leftover.file.delete(save=False)
        leftover.delete()
    user.delete()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
