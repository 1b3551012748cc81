"""Signals higher apps connect to (modelcards imports none of them)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the delete's transaction, with ``model`` (a FineTunedModel, already marked deleted):
# deployments cancel every deployment of it, so the code cannot be called afterwards.
fine_tuned_model_deleted = Signal()
