"""Training engine (no Django imports): see engine.py for the interface the Celery task uses."""

from __future__ import annotations

from .engine import (
    Callbacks,
    CheckpointError,
    TrainingCancelled,
    TrainingConfig,
    TrainingDataError,
    TrainingResult,
    evaluate_loss,
    physical_cores,
    split_examples,
    train,
)

__all__ = [
    "Callbacks",
    "CheckpointError",
    "TrainingCancelled",
    "TrainingConfig",
    "TrainingDataError",
    "TrainingResult",
    "evaluate_loss",
    "physical_cores",
    "split_examples",
    "train",
]
