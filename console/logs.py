"""Logging helpers: routine periodic work is logged at DEBUG, so ``./run up``'s output keeps what a person needs."""

from __future__ import annotations

import logging


def _periodic_tasks() -> tuple[str, ...]:
    from console.celery import app

    return tuple(sorted({entry["task"] for entry in app.conf.beat_schedule.values()}))


class RoutineWorkFilter(logging.Filter):
    """Celery's INFO lines about a periodic task (beat sending it, a worker receiving it, its success) become DEBUG.

    The reconciler alone runs every 3 s: at INFO its lines would bury the URL, the errors and the restarts. A
    failure or a retry of the same task keeps its level. Shown again with LOG_LEVEL=DEBUG."""

    # The lines Celery logs at INFO for every task: worker.strategy, app.trace and beat.
    ROUTINE = (" received", " succeeded in ", "Sending due task ")

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._tasks: tuple[str, ...] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.getMessage()
        if not any(marker in message for marker in self.ROUTINE):
            return True
        if self._tasks is None:
            self._tasks = _periodic_tasks()
        if not any(f"{task}[" in message or f"({task})" in message for task in self._tasks):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
