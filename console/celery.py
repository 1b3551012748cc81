"""The Celery application: JSON only, late acks, three queues.

``default`` carries short work (validation, notifications, housekeeping),
``training`` carries fine-tuning runs (one at a time per worker) and
``serving`` carries deployment and scaling of inference instances.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import beat_init, celeryd_init, worker_process_init
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("training", Exchange("training"), routing_key="training"),
    Queue("serving", Exchange("serving"), routing_key="serving"),
]
app.conf.beat_schedule = {
    "console-heartbeat": {"task": "console.tasks.beat_heartbeat", "schedule": 30.0},
    "jobs-repair": {"task": "jobs.repair", "schedule": 30.0},
    "datasets-repair": {"task": "datasets.repair", "schedule": 60.0},
    # Serving: desired instances against healthy ones, every few seconds (deployments/services.py).
    "deployments-reconcile": {"task": "deployments.reconcile_all", "schedule": 3.0},
    "notifications-repair": {"task": "notifications.repair", "schedule": 60.0},
    "experience-repair": {"task": "experience.repair", "schedule": 60.0},
}
app.conf.task_routes = {"jobs.train_next": {"queue": "training"}}
app.autodiscover_tasks()


def _queues(option) -> set[str]:
    if not option:
        return set()
    names = option.split(",") if isinstance(option, str) else [n for part in option for n in str(part).split(",")]
    return {n.strip() for n in names if n.strip()}


@celeryd_init.connect
def _training_worker(conf=None, options=None, **_kwargs) -> None:
    """A worker that trains has no task time limit, and a fresh process for every task.

    No time limit: a run may take days. Its liveness comes from the heartbeat (jobs.repair) and the
    stuck-step watch (TRAINING_STUCK_SECONDS), not from a timer. Celery falls back to the app-wide
    limit for a task whose own limit is None, so the limit is lifted for the worker (a training
    worker consumes the training queue alone under ./run up).

    One task a process: torch's native libraries keep what a run made them allocate (oneDNN's and
    MKL's kernels and buffers, glibc's heaps; jobs/training/memory.py bounds the part that grew
    with the run) for as long as the process lives. The pool starts the next process, which
    preloads the engine (_preload_training) while it waits, so the worker is back at its preloaded
    size after every task."""
    if "training" in _queues((options or {}).get("queues")):
        conf.task_time_limit = None
        conf.task_soft_time_limit = None
        conf.worker_max_tasks_per_child = 1


@worker_process_init.connect
def _preload_training(**_kwargs) -> None:
    """A training worker imports torch and transformers before its first task.

    It is started with CONSOLE_PRELOAD_TRAINING=1 so that a submitted task
    reaches its first step seconds sooner."""
    from django.conf import settings

    if settings.CONSOLE_PRELOAD_TRAINING:
        import peft  # noqa: F401
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

        from jobs.training import engine  # noqa: F401
        from jobs.training.memory import bound_native_caches

        bound_native_caches()  # before the first training pass (memory.py)


@beat_init.connect
def _beat_presence(**_kwargs) -> None:
    """Beat marks itself alive in Redis while it runs, so that /healthz knows it is there."""
    from .tasks import beat_presence_start

    beat_presence_start()
