"""Submit → first training step, through the console, with an idle training worker.

Run on demand (not part of the test run):

    .venv/bin/python tests/perf/bench_job_start.py [--runs 3] [--model smollm2-135m-instruct]

It starts its own embedded Redis and real Celery workers (a default worker and a
preloaded training worker) against a database under var/bench-start/, uploads a
dataset through the datasets service (real validation), then submits tasks
and measures created_at → first_step_at of each, cancelling it after its first
step. The baseline, in the same run, is a plain script in a fresh Python
process: import transformers, load the same model folder, tokenize the same
examples and take one optimizer step. Target: ≤ 30 s from submit to first step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-start"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None) if os.environ.get("BENCH_KEEP_DB") is None else None
os.environ.pop("REDIS_URL", None) if os.environ.get("BENCH_KEEP_REDIS") is None else None

BASELINE = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.monotonic()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import LoraConfig, get_peft_model
    torch.set_num_threads(2)
    folder, data = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    rows = [json.loads(l) for l in open(data) if l.strip()]
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    batch = tok(texts[:8], return_tensors="pt", padding=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward(); opt.step()
    print(time.monotonic() - t0)
    """
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default=str(ROOT / "samples" / "chat.jsonl"))
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command

    from accounts.models import User
    from datasets.models import Dataset
    from datasets.services import dataset_create
    from jobs import services as job_services
    from jobs import states as job_states
    from jobs.models import BaseModel, FineTuningJob
    from modelcards.weights import model_dir
    from tests import services

    call_command("migrate", verbosity=0)
    base = BaseModel.objects.get(code=args.model)
    folder = model_dir(base)  # converted already: the target assumes it
    redis_proc = services.start_embedded_redis()
    db_name = settings.DATABASES["default"]["NAME"]
    workers = [
        services.start_worker(db_name, queues="default", name="bench-default"),
        services.start_worker(
            db_name, queues="training", name="bench-trainer", extra_env={"CONSOLE_PRELOAD_TRAINING": "1"}
        ),
    ]
    try:
        user, _ = User.objects.get_or_create(username="bench")
        content = Path(args.data).read_bytes()
        dataset, _ = dataset_create(owner=user, upload=SimpleUploadedFile("bench.jsonl", content), category="")
        deadline = time.monotonic() + 300
        while Dataset.objects.get(pk=dataset.pk).status not in {"ready", "invalid"}:
            if time.monotonic() > deadline:
                raise SystemExit("the dataset was not validated within 300 s")
            time.sleep(0.5)
        dataset.refresh_from_db()
        if dataset.status != "ready":
            raise SystemExit(f"the dataset is {dataset.status}: {dataset.status_message}")
        time.sleep(3)  # let the training worker sit idle
        latencies = []
        for run in range(args.runs):
            job, _ = job_services.job_create(
                user=user, base_model=base, training_dataset=dataset, hyperparameters={"n_epochs": 3}
            )
            while True:
                job.refresh_from_db()
                if job.first_step_at or job.is_final:
                    break
                time.sleep(0.05)
            if not job.first_step_at:
                raise SystemExit(f"{job.public_id} ended {job.status} before a step: {job.error_message}")
            latency = (job.first_step_at - job.created_at).total_seconds()
            latencies.append(latency)
            print(f"run {run + 1}: submit → first step {latency:.1f} s")
            job_states.job_cancel(job=job)
            while not FineTuningJob.objects.get(pk=job.pk).is_final:
                time.sleep(0.2)
    finally:
        for proc in workers:
            services.stop(proc)
        services.stop(redis_proc)

    baseline = float(
        subprocess.run(
            [sys.executable, "-c", BASELINE, str(folder), args.data], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    best, worst = min(latencies), max(latencies)
    print(
        f"console, submit → first step: best {best:.1f} s, worst {worst:.1f} s over {len(latencies)} runs "
        f"(target ≤ 30 s: {'met' if worst <= 30 else 'NOT met'})"
    )
    print(f"baseline, fresh process → first step of a plain transformers+peft script: {baseline:.1f} s")
    print(f"ratio console/baseline (worst run): {worst / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
