"""The models API: GET /models, GET and DELETE /models/{model} (the openai SDK's ``client.models.*``) and
DELETE /fine_tuning/fine_tuned_models/{model} (the zhipuai SDK's)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from accounts.api import api_view
from common.api import ApiError

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
    job = getattr(model.result, "job", None)  # a checkpoint's model: its result's task
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


def _delete(model: FineTunedModel) -> None:
    try:
        services.fine_tuned_model_delete(model=model)
    except services.ModelActionRefused as exc:
        raise ApiError(409, "model_promoted", str(exc), "model") from None


@api_view(["GET", "DELETE"])
def model_detail(request: HttpRequest, model: str) -> JsonResponse:
    """``GET /models/{model}`` (``client.models.retrieve``): a base model the caller may use or one of its own
    fine-tuned models; ``DELETE`` (``client.models.delete``): one of its own fine-tuned models, as the model card's
    delete does (``services.fine_tuned_model_delete``: the model, its files and every deployment of it)."""
    owned = FineTunedModel.objects.live().owned_by(request.user).select_related("base_model", "job")
    fine_tuned = owned.filter(code=model).first()
    if request.method == "DELETE":
        if fine_tuned is None:
            if BaseModel.objects.usable_by(request.user).filter(code=model).exists():
                raise ApiError(
                    403,
                    "model_not_deletable",
                    f"{model} is a base model; only your own fine-tuned models can be deleted.",
                    "model",
                )
            raise ApiError(404, "model_not_found", f"No fine-tuned model {model} of yours.", "model")
        _delete(fine_tuned)
        return JsonResponse({"id": model, "object": "model", "deleted": True})
    if fine_tuned is not None:
        return JsonResponse(fine_tuned_model_json(fine_tuned, request.user.get_username()))
    base = BaseModel.objects.usable_by(request.user).filter(code=model).first()
    if base is None:
        raise ApiError(
            404, "model_not_found", f"The model {model} does not exist or you do not have access to it.", "model"
        )
    return JsonResponse(base_model_json(base))


@api_view(["DELETE"])
def fine_tuned_model_delete(request: HttpRequest, model: str) -> JsonResponse:
    found = FineTunedModel.objects.live().owned_by(request.user).filter(code=model).first()
    if found is None:
        raise ApiError(404, "404", f"No fine-tuned model {model}.", "model")
    _delete(found)
    return JsonResponse(
        {"request_id": request.headers.get("X-Request-Id"), "model_name": model, "delete_status": "deleted"}
    )


urlpatterns = [
    path("models", models_list, name="api_models"),
    path("models/<path:model>", model_detail, name="api_model"),
    path("fine_tuning/fine_tuned_models/<path:model>", fine_tuned_model_delete, name="api_fine_tuned_model"),
]
