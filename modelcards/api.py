"""The models API: GET /models and DELETE /fine_tuning/fine_tuned_models/{model}."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from console.api import ApiError, api_view

from . import services
from .models import BaseModel, FineTunedModel


def base_model_json(model: BaseModel) -> dict:
    capabilities = model.capabilities()
    return {
        "id": model.code,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "system",
        "display_name": model.display_name,
        "modality": model.modality,
        "weights_present": model.weights_present,
        "capabilities": capabilities.as_dict(),
    }


def fine_tuned_model_json(model: FineTunedModel, owner_name: str) -> dict:
    job = getattr(model, "job", None)
    return {
        "id": model.code,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": owner_name,
        "parent": model.base_model.code,
        "fine_tuning_job": job.public_id if job is not None else None,
        "training_type": model.training_type,
        "method": model.method,
    }


@api_view(["GET"])
def models_list(request: HttpRequest) -> JsonResponse:
    """GET /models in the OpenAI list shape: the base models the caller can use, then its fine-tuned ones."""
    data = [base_model_json(model) for model in BaseModel.objects.usable_by(request.user)]
    # The caller's own fine-tuned models, as OpenAI lists an organization's (deleted ones are gone).
    owner_name = request.user.get_username()
    data += [
        fine_tuned_model_json(model, owner_name)
        for model in FineTunedModel.objects.live().owned_by(request.user).select_related("base_model", "job")
    ]
    return JsonResponse({"object": "list", "data": data})


@api_view(["DELETE"])
def fine_tuned_model_delete(request: HttpRequest, model: str) -> JsonResponse:
    found = FineTunedModel.objects.live().owned_by(request.user).filter(code=model).first()
    if found is None:
        raise ApiError(404, "404", f"No fine-tuned model {model}.", "model")
    services.fine_tuned_model_delete(model=found)
    return JsonResponse({"request_id": request.headers.get("X-Request-Id"), "model_name": model,
                         "delete_status": "deleted"})


urlpatterns = [
    path("models", models_list, name="api_models"),
    path("fine_tuning/fine_tuned_models/<path:model>", fine_tuned_model_delete, name="api_fine_tuned_model"),
]
