from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _

from common import storage
from common.pagination import paginate
from common.polling import polled

from . import conf
from .forms import DatasetUploadForm
from .models import Category, Dataset, Severity
from .preview import display_example
from .services import DatasetError, DatasetInUse, dataset_create, dataset_delete, dataset_preview, human_bytes
from .uploads import with_upload_limit

# A dataset's errors are one-line rows read one after another while fixing the file: 50 a page (not
# common.pagination.PAGE_SIZE) keeps most files' errors on one page.
ISSUES_PAGE_SIZE = 50
LIST_FIELDS = (
    "id",
    "public_id",
    "name",
    "filename",
    "category",
    "category_auto",
    "bytes",
    "status",
    "bytes_read",
    "examples",
    "tokens",
    "error_count",
    "warning_count",
    "created_at",
)


def _get_dataset_for_user(request: HttpRequest, public_id: str) -> Dataset:
    """The user's own dataset, or 404 (another user's dataset does not exist for them)."""
    return get_object_or_404(Dataset.objects.select_related("base_model"), public_id=public_id, owner=request.user)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:200]
    qs = Dataset.objects.filter(owner=request.user).only(*LIST_FIELDS).order_by("-created_at", "-id")
    if q:
        qs = qs.filter(name__icontains=q)
    page = paginate(request, qs)
    running = any(not d.is_final for d in page.object_list)
    context = {"page": page, "q": q, "running": running, "has_any": bool(q) or page.paginator.count > 0}
    if request.htmx and request.GET.get("partial") == "table":
        html = render_to_string("datasets/list.html#table", context, request=request)
        return polled(html, settled=not running)
    return render(request, "datasets/list.html", context)


def _too_large(request: HttpRequest) -> HttpResponse:
    message = _("The file is larger than the limit of %(limit)s.") % {"limit": human_bytes(conf.max_bytes())}
    if _wants_json(request):
        response = JsonResponse({"errors": {"file": [message]}}, status=413)
    else:
        context = {"form": DatasetUploadForm(user=request.user), "max_bytes": conf.max_bytes(), "upload_error": message}
        response = render(request, "datasets/upload.html", context, status=413)
    response["Connection"] = "close"
    return response


@login_required
@with_upload_limit(_too_large)
def dataset_upload(request: HttpRequest, handler) -> HttpResponse:
    """Upload page; the size limit applies while the file streams in."""
    if request.method != "POST":
        return render(
            request,
            "datasets/upload.html",
            {"form": DatasetUploadForm(user=request.user), "max_bytes": conf.max_bytes()},
        )
    form = DatasetUploadForm(request.POST, request.FILES, user=request.user)
    if handler is not None and handler.too_large:
        return _too_large(request)
    if form.is_valid():
        try:
            dataset, _created = dataset_create(
                owner=request.user,
                upload=form.cleaned_data["file"],
                sha256=handler.sha256.hexdigest() if handler else "",
                name=form.cleaned_data["name"],
                category=form.cleaned_data["category"],
                base_model=form.cleaned_data["base_model"],
            )
        except DatasetError as exc:
            form.add_error("file", exc.message)
        else:
            url = reverse("datasets:detail", args=[dataset.public_id])
            if _wants_json(request):
                return JsonResponse({"id": dataset.public_id, "url": url}, status=201)
            messages.success(request, _("%(name)s was uploaded; it is being validated.") % {"name": dataset.name})
            return redirect(url)
    if _wants_json(request):
        return JsonResponse({"errors": {k: [str(e) for e in v] for k, v in form.errors.items()}}, status=400)
    return render(request, "datasets/upload.html", {"form": form, "max_bytes": conf.max_bytes()}, status=400)


def _detail_context(request: HttpRequest, dataset: Dataset) -> dict:
    context: dict = {"dataset": dataset, "categories": dict(Category.choices)}
    if dataset.is_final:
        errors = dataset.issues.filter(severity=Severity.ERROR).order_by("line", "id")
        context["errors_page"] = paginate(request, errors, per_page=ISSUES_PAGE_SIZE, param="errors", anchor="#errors")
        context["warnings"] = list(dataset.issues.filter(severity=Severity.WARNING).order_by("line", "id")[:200])
        context["stored_errors"] = context["errors_page"].paginator.count
        context["preview"] = [display_example(line, ex) for line, ex in dataset_preview(dataset=dataset)]
    return context


@login_required
def dataset_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    dataset = _get_dataset_for_user(request, public_id)
    return render(request, "datasets/detail.html", _detail_context(request, dataset))


@login_required
def dataset_live(request: HttpRequest, public_id: str) -> HttpResponse:
    """The part of the detail page that polls while validation runs; 286 stops the polling when done."""
    dataset = _get_dataset_for_user(request, public_id)
    html = render_to_string("datasets/detail.html#live", _detail_context(request, dataset), request=request)
    return polled(html, settled=dataset.is_final)


@login_required
def dataset_report(request: HttpRequest, public_id: str) -> FileResponse:
    """Every error and warning (not only the first 1,000) as CSV."""
    dataset = _get_dataset_for_user(request, public_id)
    if not dataset.report:
        raise Http404(_("This dataset has no report yet."))
    try:
        fh = storage.open_stream(dataset.report.name)
    except OSError:
        raise Http404(_("The report file is missing.")) from None
    return FileResponse(
        fh, as_attachment=True, filename=f"{dataset.public_id}-issues.csv", content_type="text/csv; charset=utf-8"
    )


@login_required
def dataset_download(request: HttpRequest, public_id: str) -> FileResponse:
    dataset = _get_dataset_for_user(request, public_id)
    try:
        fh = storage.open_stream(dataset.file.name)
    except OSError:
        raise Http404(_("The file is missing.")) from None
    return FileResponse(fh, as_attachment=True, filename=dataset.filename, content_type="application/jsonl")


@login_required
def dataset_delete_view(request: HttpRequest, public_id: str) -> HttpResponse:
    dataset = _get_dataset_for_user(request, public_id)
    jobs = dataset.jobs_using()
    if request.method == "POST":
        try:
            dataset_delete(dataset=dataset)
        except DatasetInUse as exc:
            messages.error(request, exc.message)
            return redirect("datasets:detail", public_id=dataset.public_id)
        messages.success(request, _("Dataset %(name)s was deleted.") % {"name": dataset.name})
        return redirect("datasets:list")
    return render(request, "datasets/confirm_delete.html", {"dataset": dataset, "jobs": jobs})
