"""Training engine (no Django imports): see engine.py for the interface the Celery task uses.

The names below load the engine (torch, transformers) on first use only, so the web process can
import the pure parts (``jobs.training.budget``: the memory estimate of the create form) cheaply."""

from __future__ import annotations

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


def __getattr__(name: str):
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
