"""A demo task killed mid-epoch, twice, finishes and its chart never runs backwards.

Against a console started with ``./run up`` (same folder, same database): uploads the demo data with
the ``zhipuai`` SDK, creates a 3-epoch LoRA task, and each time the training has gone a little past
a mid-epoch checkpoint, kills the process that trains it with SIGKILL (no chance to hand the task
back: a lost machine). The beat's repair requeues the task once its heartbeat is old, the next
training worker resumes it from the checkpoint, and the metrics logged after the checkpoint are
dropped. At the end it prints the per-step losses around each resume, checks that the steps of the
chart only grow, and writes them to ``--out`` (JSON) for a plot.

Start the console with short intervals so the demo takes minutes, not hours:

    TRAINING_CHECKPOINT_MINUTES=0.5 JOB_HEARTBEAT_TIMEOUT=20 ./run up
    .venv/bin/python scripts/demo_resume.py [--kills 2] [--epochs 3] [--out var/demo-resume.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEMO = REPO / "samples" / "demo"


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()


def api_key(username: str) -> str:
    from accounts.models import ApiKey, User

    user = User.objects.get(username=username)
    _key, text = ApiKey.create_for(user=user, name=f"demo_resume {time.strftime('%H:%M:%S')}")
    return text


def job_row(public_id: str):
    from jobs.models import FineTuningJob

    return FineTuningJob.objects.get(public_id=public_id)


def newest_checkpoint_step(job) -> int:
    last = job.checkpoints.order_by("-epoch", "-step").first()
    return (last.step or (last.metrics or {}).get("current_steps") or 0) if last else 0


def _status_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def trainer_child() -> int | None:
    """The pool process of the ``trainer@`` Celery worker that ``./run up`` starts (it trains)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if b"worker" in parent and any(arg.startswith(b"trainer@") for arg in parent):
            return int(proc.name)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("CONSOLE_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--user", default=os.environ.get("CONSOLE_ADMIN_USER", "admin"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--past", type=int, default=3, help="steps past a fresh mid-epoch checkpoint to kill at")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "demo-resume.json")
    args = parser.parse_args()
    django_setup()
    from zhipuai import ZhipuAI

    client = ZhipuAI(api_key=api_key(args.user), base_url=f"{args.base_url}/api/paas/v4")
    train = client.files.create(file=open(DEMO / "train.jsonl", "rb"), purpose="fine-tune")  # noqa: SIM115
    val = client.files.create(file=open(DEMO / "validation.jsonl", "rb"), purpose="fine-tune")  # noqa: SIM115
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=train.id,
        validation_file=val.id,
        suffix=f"resume-demo-{int(time.time())}",
        hyperparameters={"n_epochs": args.epochs, "batch_size": 8, "learning_rate_multiplier": 2},
        extra_body={"method": "sft", "training_type": "lora"},
    )
    print(f"task {job.id} created", flush=True)
    started, kills, killed_at = time.monotonic(), [], -1
    idle_rss: dict[int, float] = {}  # a training process's resident memory before it trains (preloaded)
    child = trainer_child()
    if child:
        idle_rss[child] = _status_mb(child, "VmRSS")
    peak: dict[int, float] = {}  # VmHWM of each training process, last read (it exits after its task)
    while True:
        child = trainer_child()
        if child and child not in idle_rss:
            time.sleep(3)  # a new pool process preloads torch and the engine, then waits for the requeue
            idle_rss[child] = _status_mb(child, "VmRSS")
        if child:
            peak[child] = _status_mb(child, "VmHWM") or peak.get(child, 0.0)
        row = job_row(job.id)
        if row.status in ("succeeded", "failed", "cancelled"):
            break
        step = (row.progress or {}).get("current_steps") or 0
        ckpt = newest_checkpoint_step(row)
        # kill a little after a checkpoint taken inside an epoch (and after the last kill's resume)
        if (
            len(kills) < args.kills
            and row.status == "running"
            and row.worker
            and ckpt > killed_at
            and step >= ckpt + args.past
            and ckpt % max(1, row.progress.get("total_steps", 1) // args.epochs)
        ):
            pid = int(row.worker.rsplit(":", 1)[1])
            print(
                f"{time.monotonic() - started:6.0f} s  step {step}, checkpoint at step {ckpt}: "
                f"SIGKILL to the training process {pid}",
                flush=True,
            )
            os.kill(pid, signal.SIGKILL)
            kills.append({"at_step": step, "checkpoint_step": ckpt, "t": time.monotonic() - started})
            killed_at = ckpt
        time.sleep(0.5)

    row = job_row(job.id)
    print(f"{time.monotonic() - started:6.0f} s  {row.status} after {row.attempts} attempts", flush=True)
    memory = {}
    finisher = int(row.worker.rsplit(":", 1)[1]) if row.worker else None
    # the task has returned: the pool replaces its process (one task a process), the new one preloads
    deadline, after = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        child = trainer_child()
        if child and child != finisher:
            time.sleep(8)
            after = _status_mb(child, "VmRSS")
            break
        if child == finisher and finisher:
            peak[finisher] = _status_mb(finisher, "VmHWM") or peak.get(finisher, 0.0)
        time.sleep(0.2)
    if finisher in idle_rss and after:
        memory = {
            "preloaded_mb": idle_rss[finisher],
            "peak_mb": peak.get(finisher),
            "after_mb": after,
            "peaks_mb": list(peak.values()),
        }
        print(
            f"training process {finisher}: preloaded "
            f"{memory['preloaded_mb']:.0f} MB, peak {memory['peak_mb']:.0f} MB "
            f"(every attempt's: {', '.join(f'{p:.0f}' for p in peak.values())} MB); the worker's training process "
            f"after the task: {after:.0f} MB ({after / memory['preloaded_mb']:.2f}x the preloaded size)"
        )
    events, after = [], None
    while True:
        page = client.fine_tuning.jobs.list_events(job.id, limit=100, after=after)
        events += page.data
        if not page.has_more:
            break
        after = page.data[-1].id
    events.sort(key=lambda e: e.created_at)
    metrics = [e.data for e in events if e.type == "metrics" and e.data]
    messages = [e.message for e in events if e.type != "metrics"]
    steps = [m.current_steps for m in metrics]
    for message in messages:
        if "resumed from step" in message or "Worker lost" in message:
            print("  event:", message)
    backwards = [(a, b) for a, b in zip(steps, steps[1:], strict=False) if b <= a]
    print(f"chart: {len(steps)} points, steps {steps[0]}..{steps[-1]}, backwards segments: {len(backwards)}")
    losses = {m.current_steps: m.loss for m in metrics if m.loss is not None}
    for kill in kills:
        s = kill["checkpoint_step"]
        around = [(k, round(v, 3)) for k, v in sorted(losses.items()) if s - 3 <= k <= s + 3]
        print(f"  killed at step {kill['at_step']}, resumed from {s}: losses around it {around}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "job": job.id,
                "status": row.status,
                "attempts": row.attempts,
                "kills": kills,
                "memory": memory,
                "points": [{"step": m.current_steps, "loss": m.loss, "eval_loss": m.eval_loss} for m in metrics],
                "messages": messages,
            },
            indent=1,
        )
    )
    print(f"written {args.out}; the task's page: {args.base_url}/console/jobs/{job.id}/")
    sys.exit(0 if row.status == "succeeded" and not backwards and len(kills) == args.kills else 1)


if __name__ == "__main__":
    main()
