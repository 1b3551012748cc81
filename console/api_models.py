from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from jobs.models import BaseModel

from .api import api_view


@api_view(["GET"])
def models_list(request: HttpRequest) -> JsonResponse:
    """GET /models in the OpenAI list shape: the models the caller can use."""
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
    return JsonResponse({"object": "list", "data": data})
