"""The files API, as the zhipuai SDK calls it (client.files.*), under /api/paas/v4/.

File object: ``{id, object: "file", bytes, created_at, filename, purpose, status,
status_details}`` plus our ``category`` and ``examples``/``tokens`` once known.
``status`` follows validation: ``uploaded`` (queued), ``processing`` (being
validated), ``processed`` (valid, ready for fine-tuning) or ``error`` (invalid;
``status_details`` says why, starting with the first error's line). ``GET /files/{id}``
adds ``problems``: every recorded error and warning (line, JSON path, code, message), with
``problems_truncated`` when the file had more than were kept.

Creates are idempotent: a ``request_id`` form field (``extra_body={"request_id": ...}``
in the SDK) or an ``Idempotency-Key`` header names the create, and a second create
with the same name returns the first file. Without one, the same user's same
content under the same file name within ``DATASET_DEDUPE_WINDOW`` seconds (600)
is taken for an SDK retry and also returns the first file.
"""

from __future__ import annotations

from django.http import FileResponse, HttpRequest, JsonResponse
from django.urls import path
from django.utils.translation import gettext as _

from accounts.api import api_view
from common import storage
from common.api import ApiError, cursor_page
from common.error_codes import BAD_PARAM, IN_USE, TOO_LARGE

from . import conf
from .models import Category, Dataset, Status
from .services import (
    DatasetError,
    DatasetInUse,
    dataset_create,
    dataset_delete,
    dataset_status_details,
    human_bytes,
    with_first_error,
)
from .uploads import content_length_too_large, install_upload_handler

PURPOSES = ("fine-tune",)


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def file_json(dataset: Dataset) -> dict:
    data = {
        "id": dataset.public_id,
        "object": "file",
        "bytes": dataset.bytes,
        "created_at": _ts(dataset.created_at),
        "filename": dataset.filename,
        "purpose": dataset.purpose,
        "status": dataset.api_status(),
        "status_details": dataset_status_details(dataset=dataset),
        "category": dataset.category or None,
    }
    if dataset.status in (Status.READY, Status.INVALID):
        data.update(
            {
                "examples": dataset.examples,
                "tokens": dataset.tokens,
                "images": dataset.images,
                "errors": dataset.error_count,
                "warnings": dataset.warning_count,
            }
        )
    return data


def problems_json(dataset: Dataset) -> dict:
    """Every recorded problem of a validated file, errors first, for ``GET /files/{id}``.

    The first ``KEEP`` (1,000) are kept in the database; ``problems_truncated`` says when the file had more
    (the CSV report on the dataset's page has them all). The list endpoint leaves this out to stay light.
    Messages are in the request's language: English, the platform's, unless the client asks for another."""
    issues = [
        {"severity": issue.severity, "line": issue.line, "path": issue.path, "code": issue.code, "message": issue.text}
        for issue in dataset.issues.order_by("severity", "line", "id")
    ]
    return {
        "problems": issues,
        "problems_truncated": len(issues) < (dataset.error_count or 0) + (dataset.warning_count or 0),
    }


def _get_file(request: HttpRequest, file_id: str) -> Dataset:
    dataset = Dataset.objects.filter(owner=request.user, public_id=file_id).first()
    if dataset is None:
        raise ApiError(404, "404", f"No file {file_id}.", "file_id")
    return dataset


@api_view(["GET", "POST"])
def files(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _create(request)
    return _list(request)


def _create(request: HttpRequest) -> JsonResponse:
    if content_length_too_large(request):
        raise ApiError(
            413,
            TOO_LARGE,
            _("The file is larger than the limit of %(limit)s.") % {"limit": human_bytes(conf.max_bytes())},
            "file",
        )
    handler = install_upload_handler(request)
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, BAD_PARAM, "Send the file as multipart/form-data with fields file and purpose.")
    post, uploads = request.POST, request.FILES
    if handler.too_large:
        raise ApiError(
            413,
            TOO_LARGE,
            _("The file is larger than the limit of %(limit)s.") % {"limit": human_bytes(conf.max_bytes())},
            "file",
        )
    purpose = post.get("purpose", "")
    if purpose not in PURPOSES:
        raise ApiError(400, BAD_PARAM, f"purpose must be 'fine-tune', not {purpose!r}.", "purpose")
    upload = uploads.get("file")
    if upload is None:
        raise ApiError(400, BAD_PARAM, "The multipart field 'file' is missing.", "file")
    category = post.get("category", "").strip()
    if category and category not in Category.values:
        raise ApiError(400, BAD_PARAM, f"category must be one of {', '.join(Category.values)}.", "category")
    request_id = (post.get("request_id") or request.headers.get("Idempotency-Key") or "").strip()[:128] or None
    try:
        dataset, created = dataset_create(
            owner=request.user,
            upload=upload,
            sha256=handler.sha256.hexdigest(),
            name=post.get("name", ""),
            category=category,
            purpose=purpose,
            request_id=request_id,
            dedupe_window=conf.dedupe_window_seconds(),
        )
    except DatasetError as exc:
        code = "quota_exceeded" if exc.code == "quota_exceeded" else BAD_PARAM
        raise ApiError(413 if exc.code == "too_large" else 400, code, exc.message, "file") from None
    return JsonResponse(file_json(dataset), status=200, json_dumps_params={"ensure_ascii": False})


def _list(request: HttpRequest) -> JsonResponse:
    qs = with_first_error(Dataset.objects.filter(owner=request.user))
    purpose = request.GET.get("purpose")
    if purpose:
        qs = qs.filter(purpose=purpose)
    return cursor_page(request, qs, serialize=file_json, noun="file", orderable=True)


@api_view(["GET", "DELETE"])
def file_detail(request: HttpRequest, file_id: str) -> JsonResponse:
    dataset = _get_file(request, file_id)
    if request.method == "GET":
        data = file_json(dataset)
        if dataset.status in (Status.READY, Status.INVALID):
            data.update(problems_json(dataset))
        return JsonResponse(data, json_dumps_params={"ensure_ascii": False})
    try:
        dataset_delete(dataset=dataset)
    except DatasetInUse as exc:
        raise ApiError(400, IN_USE, exc.message, "file_id") from None
    return JsonResponse({"id": file_id, "object": "file", "deleted": True})


@api_view(["GET"])
def file_content(request: HttpRequest, file_id: str) -> FileResponse:
    dataset = _get_file(request, file_id)
    try:
        fh = storage.open_stream(dataset.file.name)
    except OSError:
        raise ApiError(404, "404", f"The content of {file_id} is missing.", "file_id") from None
    return FileResponse(fh, filename=dataset.filename, content_type="application/octet-stream")


urlpatterns = [
    path("files", files, name="api_files"),
    path("files/<str:file_id>", file_detail, name="api_file"),
    path("files/<str:file_id>/content", file_content, name="api_file_content"),
]
