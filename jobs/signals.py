"""Signals higher apps connect to (jobs imports none of them)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once the transaction that marks a task succeeded has committed, with ``job`` (a FineTuningJob whose
# ``result`` is its model card). Receivers must not fail the task: it has already succeeded.
job_succeeded = Signal()
