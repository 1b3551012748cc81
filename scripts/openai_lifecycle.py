"""A fine-tune's whole life through the real ``openai`` package, as a team moving off hosted fine-tuning runs it.

Upload → create (OpenAI's ``method`` shape) → events → pause → resume → succeeded → checkpoints → chat with a
checkpoint's code → ``models.delete``. Against a running console (``./run up``), with an API key from the
console's API keys page:

    .venv/bin/python scripts/openai_lifecycle.py --api-key <id>.<secret> [--base-url http://127.0.0.1:8000/api/paas/v4]

It prints each step and what it took; any step that does not do what the platform's API promises stops it with the
reason (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from openai import APIStatusError, OpenAI

ROOT = Path(__file__).resolve().parent.parent
FINAL = {"succeeded", "failed", "cancelled"}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fail(message: str) -> None:
    say(f"FAILED: {message}")
    sys.exit(1)


def training_file(examples: int) -> Path:
    """The demo's training data (samples/demo/train.jsonl), or a small generated chat set if it is not here."""
    demo = ROOT / "samples" / "demo" / "train.jsonl"
    lines = (
        demo.read_text().splitlines()[:examples]
        if demo.exists()
        else [
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"What is {i} plus {i}?"},
                        {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
                    ]
                }
            )
            for i in range(examples)
        ]
    )
    path = Path(tempfile.mkdtemp()) / "lifecycle.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait(client: OpenAI, job_id: str, until, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        if job.status in FINAL:
            fail(f"the task ended {job.status} while waiting for {what}: {job.error}")
        if time.monotonic() > deadline:
            fail(f"no {what} after {timeout:.0f} s (status {job.status})")
        time.sleep(2)


def chat(client: OpenAI, model: str, timeout: float = 900) -> str:
    """One answer, waiting while an idle public pool starts an instance (503 model_starting, Retry-After)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "How much water does the Aurora Kettle X7 hold?"}],
                max_tokens=40,
                temperature=0,
            )
            return reply.choices[0].message.content or ""
        except APIStatusError as exc:
            starting = exc.status_code == 503 and time.monotonic() < deadline
            if not starting:
                raise
            say(f"  {model}: {exc.message} (waiting)")
            time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/api/paas/v4")
    parser.add_argument("--model", default="", help="the base model's code (default: the console's default)")
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the training may take")
    parser.add_argument("--keep", action="store_true", help="keep the model at the end (no models.delete)")
    args = parser.parse_args()
    client = OpenAI(api_key=args.api_key, base_url=args.base_url, max_retries=0, timeout=600)

    model = args.model or next(
        (m.id for m in client.models.list() if getattr(m, "parent", None) is None and not m.id.startswith("ft:")), ""
    )
    say(f"base model {model}")
    with training_file(args.examples).open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="fine-tune")
    say(f"uploaded {uploaded.id} ({uploaded.bytes} bytes)")

    job = client.fine_tuning.jobs.create(
        model=model,
        training_file=uploaded.id,
        suffix="lifecycle",
        seed=7,
        metadata={"run": "lifecycle"},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": args.epochs, "batch_size": 4, "learning_rate_multiplier": "auto"}
            },
        },
    )
    say(f"created {job.id}: {job.status}, method {job.method.type}, model {job.fine_tuned_model or '(when done)'}")

    job = wait(client, job.id, lambda j: j.status == "running", "a running task", args.timeout)
    time.sleep(5)  # a few steps
    client.fine_tuning.jobs.pause(job.id)
    job = wait(client, job.id, lambda j: j.status == "paused", "the pause", 600)
    say(f"paused: {job.status}")
    client.fine_tuning.jobs.resume(job.id)
    say(f"resumed: {client.fine_tuning.jobs.retrieve(job.id).status}")
    job = wait(client, job.id, lambda j: j.status == "succeeded", "success", args.timeout)
    say(f"succeeded: {job.fine_tuned_model}, {job.trained_tokens} trained tokens")

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = [e.message for e in events]
    for needed in ("paused", "Resumed", "Checkpoint saved"):
        if not any(needed.lower() in m.lower() for m in messages):
            fail(f"no event about {needed!r} in {messages[:20]}")
    say(f"{len(events)} events, the pause, the resume and the checkpoints among them")

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    if len(checkpoints) != args.epochs:
        fail(f"{len(checkpoints)} checkpoints listed, {args.epochs} expected")
    for checkpoint in checkpoints:
        say(
            f"  {checkpoint.fine_tuned_model_checkpoint}: step {checkpoint.step_number}, "
            f"train loss {checkpoint.metrics.train_loss}, valid loss {checkpoint.metrics.valid_loss}"
        )
    first = min(checkpoints, key=lambda c: c.step_number).fine_tuned_model_checkpoint
    say(f"{first} answers: {chat(client, first)!r}")
    say(f"{job.fine_tuned_model} answers: {chat(client, job.fine_tuned_model)!r}")
    retrieved = client.models.retrieve(first)
    say(f"models.retrieve({first}): owned by {retrieved.owned_by}")

    if args.keep:
        say(f"kept: {job.fine_tuned_model} and its checkpoints")
        return
    deleted = client.models.delete(job.fine_tuned_model)
    say(f"models.delete: {deleted.deleted}")
    for code in (job.fine_tuned_model, first):
        try:
            client.chat.completions.create(model=code, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            fail(f"{code} still answers after the delete")
        except APIStatusError as exc:
            say(f"  {code} after the delete: {exc.status_code}")
    say("done: every step did what the platform's API promises")


if __name__ == "__main__":
    main()
