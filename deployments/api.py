"""The deployments API (automation) and the chat completions gateway's URL."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from accounts.api import api_view
from common.api import ApiError, cursor_page, parse_json_body
from common.error_codes import BAD_PARAM

from . import gateway, services
from .models import Deployment


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def deployment_json(deployment: Deployment) -> dict:
    failed = deployment.status in ("failed", "error")
    return {
        "id": deployment.public_id,
        "object": "deployment",
        "model": deployment.model_code,
        "code": deployment.code,
        "status": deployment.status,
        "instances": deployment.desired_instances,
        "ready_instances": deployment.ready_instances,
        "created_at": _ts(deployment.created_at),
        "error": {"code": deployment.status, "message": deployment.status_reason} if failed else None,
        "status_reason": deployment.status_reason or None,
        "request_id": deployment.request_id or None,
    }


def webhook_deployment(code: str) -> dict:
    """A webhook's ``data`` (notifications.webhooks): the deployment as this API shows it."""
    return deployment_json(Deployment.objects.get(code=code))


def _deployments(request):
    return Deployment.objects.owned_by(request.user).select_related("base_model", "fine_tuned_model")


def _get(request, deployment_id: str) -> Deployment:
    found = _deployments(request).filter(public_id=deployment_id).first()
    if found is None:
        raise ApiError(404, "404", f"No deployment {deployment_id}.", "deployment_id")
    return found


def _input_error(exc: services.DeploymentInputError) -> ApiError:
    status = 404 if exc.code == "model_not_found" else 400
    return ApiError.from_input(exc, status)


@api_view(["GET", "POST"])
def deployments(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return cursor_page(request, _deployments(request), serialize=deployment_json, noun="deployment")
    body = parse_json_body(request)
    code = body.get("model")
    if not isinstance(code, str) or not code:
        raise ApiError(400, BAD_PARAM, "model is required.", "model")
    try:
        model = services.deployable_model(user=request.user, code=code)
        deployment = services.deployment_create(
            user=request.user,
            model=model,
            instances=body.get("instances", 1),
            request_id=str(body.get("request_id") or request.headers.get("X-Request-Id") or "")[:128],
        )
    except services.DeploymentInputError as exc:
        raise _input_error(exc) from None
    return JsonResponse(deployment_json(deployment))


@api_view(["GET", "PATCH"])
def deployment(request: HttpRequest, deployment_id: str) -> JsonResponse:
    found = _get(request, deployment_id)
    if request.method == "PATCH":
        body = parse_json_body(request)
        if "instances" not in body:
            raise ApiError(400, BAD_PARAM, "instances is required.", "instances")
        try:
            found = services.deployment_scale(deployment=found, instances=body["instances"])
        except services.DeploymentInputError as exc:
            raise _input_error(exc) from None
    return JsonResponse(deployment_json(found))


@api_view(["POST"])
def deployment_cancel(request: HttpRequest, deployment_id: str) -> JsonResponse:
    return JsonResponse(deployment_json(services.deployment_cancel(deployment=_get(request, deployment_id))))


urlpatterns = [
    path("chat/completions", gateway.chat_completions, name="api_chat_completions"),
    path("deployments", deployments, name="api_deployments"),
    path("deployments/<str:deployment_id>", deployment, name="api_deployment"),
    path("deployments/<str:deployment_id>/cancel", deployment_cancel, name="api_deployment_cancel"),
]
