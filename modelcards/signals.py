"""Signals higher apps connect to (modelcards imports none of them)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent inside the delete's transaction, with ``model`` (a FineTunedModel, already marked deleted):
# deployments cancel every deployment of it, so the code cannot be called afterwards.
fine_tuned_model_deleted = Signal()

# Sent after the commit of a promotion, with ``model`` (a result whose ``path`` now names other weights) and
# ``previous_name`` (what model servers knew the old weights by, ``FineTunedModel.serving_name``): deployments
# drop what they built or loaded from the old ones (merged copies, exports, pool adapters).
fine_tuned_model_weights_changed = Signal()
