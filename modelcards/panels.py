"""The overview panel of model cards."""

from __future__ import annotations

from .models import BaseModel, FineTunedModel


def overview_panel(request) -> dict:
    bases = list(BaseModel.objects.usable_by(request.user))
    return {
        "fine_tuned": FineTunedModel.objects.live().results().owned_by(request.user).count(),
        "base": len(bases),
        "trainable": sum(1 for m in bases if m.capabilities().can_train),
    }
