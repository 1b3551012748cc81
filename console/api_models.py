from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from jobs.models import BaseModel, FineTunedModel

from .api import api_view


@api_view(["GET"])
def models_list(request: HttpRequest) -> JsonResponse:
    """GET /models in the OpenAI list shape: the base models the caller can use, then its fine-tuned ones."""
    data = [
        {
            "id": model.code,
            "object": "model",
            "created": int(model.created_at.timestamp()),
            "owned_by": "system",
            "display_name": model.display_name,
            "modality": model.modality,
            "weights_present": model.weights_present,
        }
        for model in BaseModel.objects.usable_by(request.user)
    ]
    # The caller's own fine-tuned models, as OpenAI lists an organization's (deleted ones are gone).
    data += [
        {
            "id": model.code,
            "object": "model",
            "created": int(model.created_at.timestamp()),
            "owned_by": request.user.get_username(),
            "parent": model.base_model.code,
            "fine_tuning_job": model.job.public_id,
        }
        for model in FineTunedModel.objects.filter(owner=request.user, deleted_at__isnull=True)
        .select_related("base_model", "job")
    ]
    return JsonResponse({"object": "list", "data": data})
