"""The datasets domain: create, validate, read, delete. Views, tasks, the API and the admin call these."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import IO

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from accounts.quotas import QuotaExceeded, quota_enforce
from common import storage
from common.error_codes import InputError
from common.queueing import enqueue_on_commit

from . import conf, states
from .messages import Message, render
from .models import FINAL_STATUSES, Category, Dataset, Severity, Status, TokenCount, ValidationIssue
from .schema import check_example
from .validation import BOM, ValidationCancelled, ValidationResult, Validator

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=2)
PREVIEW_LINE_BYTES = 8 * 1024 * 1024  # a validating dataset with no progress this long lost its worker


class DatasetError(InputError):
    """A request about a dataset that cannot be done, with a message for the user."""

    default_code = "invalid"


class DatasetInUse(DatasetError):
    """The dataset trained (or validated) a fine-tuning task and is kept for its record."""

    def __init__(self, jobs: list):
        self.jobs = jobs
        names = ", ".join(str(getattr(job, "public_id", None) or job) for job in jobs)
        super().__init__(
            ngettext(
                "This dataset is used by fine-tuning task %(jobs)s and is kept for its record.",
                "This dataset is used by fine-tuning tasks %(jobs)s and is kept for their record.",
                len(jobs),
            )
            % {"jobs": names},
            code="in_use",
        )


def _default_base_model():
    from modelcards.models import BaseModel

    return BaseModel.objects.filter(is_default=True).first()


# --- create -----------------------------------------------------------------


def dataset_find_duplicate(
    *,
    owner,
    request_id: str | None = None,
    sha256: str = "",
    filename: str = "",
    purpose: str = "fine-tune",
    window_seconds: int | None = None,
) -> Dataset | None:
    """The dataset a retried create already made: same request_id, else same content in the window."""
    if request_id:
        return Dataset.objects.filter(owner=owner, request_id=request_id).first()
    if window_seconds and sha256:
        since = timezone.now() - timedelta(seconds=window_seconds)
        return (
            Dataset.objects.filter(
                owner=owner,
                sha256=sha256,
                filename=filename,
                purpose=purpose,
                created_at__gte=since,
                request_id__isnull=True,
            )
            .order_by("-created_at")
            .first()
        )
    return None


def dataset_check_quota(*, owner) -> None:
    """The owner's limit of datasets stored (USER_MAX_DATASETS, or their own set in the admin)."""
    try:
        quota_enforce(user=owner, name="datasets", used_qs=Dataset.objects.filter(owner=owner))
    except QuotaExceeded as exc:
        raise DatasetError(exc.message, code="quota_exceeded") from None


def dataset_create(
    *,
    owner,
    upload: UploadedFile,
    sha256: str = "",
    name: str = "",
    category: str = "",
    purpose: str = "fine-tune",
    request_id: str | None = None,
    base_model=None,
    dedupe_window: int | None = None,
) -> tuple[Dataset, bool]:
    """Store an uploaded file as a dataset and queue its validation; return (dataset, created).

    A retry of the same create (same ``request_id``; without one, the same content
    within ``dedupe_window`` seconds) returns the first dataset instead of a duplicate.
    """
    request_id = (request_id or "").strip() or None
    filename = Path(upload.name or "data.jsonl").name[:255] or "data.jsonl"
    existing = dataset_find_duplicate(
        owner=owner,
        request_id=request_id,
        sha256=sha256,
        filename=filename,
        purpose=purpose,
        window_seconds=dedupe_window,
    )
    if existing is not None:
        return existing, False
    if not upload.size:
        raise DatasetError(_("The file is empty: it holds no examples."), code="empty")
    if upload.size > conf.max_bytes():
        limit = human_bytes(conf.max_bytes())
        raise DatasetError(_("The file is larger than the limit of %(limit)s.") % {"limit": limit}, code="too_large")
    if category and category not in Category.values:
        raise DatasetError(_("Unknown category %(category)s.") % {"category": category}, code="category")
    dataset_check_quota(owner=owner)  # before storing the file; again, locked, where the row is saved
    dataset = Dataset(
        owner=owner,
        name=(name or "").strip()[:200] or Path(filename).stem[:200] or filename,
        filename=filename,
        purpose=purpose,
        category=category or "",
        category_auto=not category,
        bytes=upload.size,
        sha256=sha256,
        request_id=request_id,
        base_model=base_model or _default_base_model(),
    )
    stored_name = None
    try:
        # Stored before the transaction: with a bucket it is a network call, which no transaction waits on.
        dataset.file.save(filename, upload, save=False)
        stored_name = dataset.file.name
        with transaction.atomic():
            dataset_check_quota(owner=owner)
            dataset.save()
            dataset_enqueue_validation(dataset_id=dataset.pk)
    except IntegrityError:
        # Two retries of the same request raced: keep the first.
        if stored_name:
            default_storage.delete(stored_name)
        existing = dataset_find_duplicate(owner=owner, request_id=request_id)
        if existing is None:
            raise
        return existing, False
    except BaseException:
        if stored_name:
            default_storage.delete(stored_name)
        raise
    return dataset, True


def dataset_enqueue_validation(*, dataset_id: int) -> None:
    """Once the current transaction commits (at once outside one)."""
    enqueue_on_commit("datasets.validate_dataset", dataset_id, queue="default")  # lost: dataset_repair sends it again


# --- validate ---------------------------------------------------------------


def dataset_validate(*, dataset_id: int) -> Dataset | None:
    """Validate a dataset once: claim it, stream through it, store the result.

    Returns None when there was nothing to do (already validated, being validated
    by a live worker, or deleted). A crash leaves the dataset invalid with the reason.
    """
    if not states.dataset_claim(dataset_id=dataset_id, stale_after=STALE_AFTER):
        return None
    dataset = Dataset.objects.select_related("owner", "base_model").filter(pk=dataset_id).first()
    if dataset is None:  # deleted right after the claim
        return None
    language = getattr(dataset.owner, "language", None) or "en"
    with translation.override(language):
        try:
            return _run_validation(dataset)
        except ValidationCancelled:
            logger.info("dataset %s went away while it was validated", dataset_id)
            return None
        except Exception as exc:
            logger.exception("validation of dataset %s crashed", dataset_id)
            crashed = Message(
                gettext_noop(
                    "Validation stopped on an internal error (%(error)s); the error was logged. "
                    "Upload the file again or tell the operator."
                )
            ) % {"error": type(exc).__name__}
            states.dataset_crashed(dataset_id=dataset_id, message=crashed)
            return Dataset.objects.filter(pk=dataset_id).first()


def dataset_repair(*, older_than: timedelta = STALE_AFTER) -> int:
    """Queue validation again where its message was lost or its worker died; return how many.

    Runs periodically (beat). Re-sending is safe: the task claims a dataset only
    while it is uploaded, or validating with no progress for ``STALE_AFTER``.
    """
    cutoff = timezone.now() - older_than
    stale = Dataset.objects.filter(
        Q(status=Status.UPLOADED, updated_at__lt=cutoff) | Q(status=Status.VALIDATING, heartbeat_at__lt=cutoff)
    ).values_list("id", flat=True)
    ids = list(stale[:500])
    for pk in ids:
        dataset_enqueue_validation(dataset_id=pk)
    if ids:
        logger.info("re-queued validation of %d dataset(s)", len(ids))
    return len(ids)


def _tokenizer_for(dataset: Dataset) -> tuple[object, Message | None, int | None]:
    """(tokenizer or None, note or None, context length)."""
    base_model = dataset.base_model
    if base_model is None:
        return None, Message(gettext_noop("No base model is configured, so tokens were not counted.")), None
    try:
        from .tokenizer import load_counting_tokenizer

        return load_counting_tokenizer(base_model), None, base_model.context_length
    except Exception as exc:  # weights not on this server
        logger.warning("no tokenizer for %s: %s", base_model, exc)
        note = Message(
            gettext_noop(
                "Tokens were not counted: the tokenizer of %(model)s is not available on this server (%(error)s)."
            )
        ) % {"model": base_model.code, "error": str(exc)}
        return None, note, base_model.context_length


def _run_validation(dataset: Dataset) -> Dataset:
    tokenizer, token_note, context_length = _tokenizer_for(dataset)
    pk = dataset.pk

    def progress(done: int) -> bool:
        return bool(
            Dataset.objects.filter(pk=pk, status=Status.VALIDATING).update(bytes_read=done, heartbeat_at=timezone.now())
        )

    report_name = dataset.report.field.generate_filename(dataset, "issues.csv")
    # The report is written to a local temp file while the file streams from storage, then stored whole.
    report_tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - stored or removed below
        mode="w",
        encoding="utf-8",
        newline="",
        suffix=".csv",
        delete=False,
    )
    try:
        with report_tmp, _open_dataset(dataset) as fh:
            validator = Validator(
                category=dataset.category or None,
                tokenizer=tokenizer,
                context_length=context_length,
                advised_min_examples=conf.advised_min_examples(),
                max_line_bytes=conf.max_line_bytes(),
                report=report_tmp,
                progress=progress,
            )
            result = validator.run(fh)
        stored_report = storage.save_file(report_tmp.name, report_name)
    finally:
        if os.path.exists(report_tmp.name):
            os.unlink(report_tmp.name)
    return _save_result(dataset, result, stored_report, token_note)


def _open_dataset(dataset: Dataset) -> IO[bytes]:
    """The dataset's file as a stream from storage (never read whole into memory)."""
    return storage.open_stream(dataset.file.name)


def _save_result(dataset: Dataset, result: ValidationResult, report_name: str, token_note: Message | None) -> Dataset:
    fields = {
        "category": result.category,
        "lines": result.lines,
        "examples": result.examples,
        "legacy_examples": result.legacy_examples,
        "tokens": result.tokens,
        "text_tokens": result.text_tokens,
        "images": result.images,
        "longest_example_tokens": result.longest_example_tokens,
        "truncated_examples": result.truncated_examples,
        "duplicate_lines": result.duplicate_lines,
        "error_count": result.error_count,
        "warning_count": result.warning_count,
        "bytes_read": result.bytes_read,
        "report": report_name,
        "validated_at": timezone.now(),
        "heartbeat_at": timezone.now(),
        "status_message": token_note.english() if token_note else "",
        "status_message_args": token_note.as_json() if token_note else None,
    }

    def record() -> None:
        ValidationIssue.objects.filter(dataset_id=dataset.pk).delete()
        TokenCount.objects.filter(dataset_id=dataset.pk).delete()  # validated again: every count is stale
        if dataset.base_model_id is not None and result.valid:
            TokenCount.objects.create(
                dataset_id=dataset.pk,
                base_model_id=dataset.base_model_id,
                tokens=result.tokens,
                text_tokens=result.text_tokens,
                images=result.images,
                longest_example_tokens=result.longest_example_tokens,
                truncated_examples=result.truncated_examples,
                error=str(token_note) if token_note and result.tokens is None else "",
            )
        ValidationIssue.objects.bulk_create(
            ValidationIssue(
                dataset_id=dataset.pk,
                severity=issue.severity,
                line=issue.line,
                path=issue.path[:200],
                code=issue.code[:40],
                message=issue.message.english(),
                message_args=issue.message.as_json(),
            )
            for issue in [*result.errors, *result.warnings]
        )

    # Only the worker that holds the claim writes; a deleted dataset stays deleted.
    if not states.dataset_validated(dataset=dataset, valid=result.valid, fields=fields, record=record):
        default_storage.delete(report_name)
        raise ValidationCancelled
    dataset.refresh_from_db()
    return dataset


# --- token counts per base model -------------------------------------------


def dataset_token_count(*, dataset: Dataset, base_model) -> TokenCount:
    """The dataset's tokens with ``base_model``'s tokenizer and template: cached, else counted now.

    Streams the file through the validator with that tokenizer (constant memory); a tokenizer that
    cannot be loaded is recorded with the reason (``error``) and the count stays empty."""
    cached = TokenCount.objects.filter(dataset=dataset, base_model=base_model).first()
    if cached is not None:
        return cached
    fields: dict = {}
    try:
        from .tokenizer import load_counting_tokenizer

        tokenizer = load_counting_tokenizer(base_model)
        with _open_dataset(dataset) as fh:
            result = Validator(
                category=dataset.category or None,
                tokenizer=tokenizer,
                context_length=base_model.context_length,
                max_line_bytes=conf.max_line_bytes(),
            ).run(fh)
        if result.error_count:
            first = result.errors[0] if result.errors else None
            fields["invalid"] = True
            fields["error"] = (
                _("line %(line)s: %(message)s") % {"line": first.line, "message": first.message}
                if first is not None
                else ngettext("%(n)s error", "%(n)s errors", result.error_count) % {"n": result.error_count}
            )
        else:
            fields.update(
                tokens=result.tokens,
                text_tokens=result.text_tokens,
                images=result.images,
                longest_example_tokens=result.longest_example_tokens,
                truncated_examples=result.truncated_examples,
            )
    except Exception as exc:  # weights missing, a broken tokenizer: say why
        logger.warning("could not count dataset %s with %s: %s", dataset.pk, base_model, exc)
        fields["error"] = _("The tokenizer of %(model)s could not count it: %(error)s") % {
            "model": base_model.code,
            "error": exc,
        }
    try:
        with transaction.atomic():
            return TokenCount.objects.create(dataset=dataset, base_model=base_model, **fields)
    except IntegrityError:  # counted by another worker meanwhile
        return TokenCount.objects.get(dataset=dataset, base_model=base_model)


def dataset_cached_count(*, dataset: Dataset, base_model) -> TokenCount | None:
    """The count with ``base_model`` if it was made (no counting here)."""
    return TokenCount.objects.filter(dataset=dataset, base_model=base_model).first()


# --- read -------------------------------------------------------------------


def _iter_valid(
    dataset: Dataset, *, line_limit: int | None = None, max_lines: int | None = None
) -> Iterator[tuple[int, dict]]:
    """(line number, normalized example) for each valid line of the file."""
    import json

    limit = (line_limit or conf.max_line_bytes()) + 1
    category = dataset.category or Category.CHAT
    with _open_dataset(dataset) as fh:
        line_no = 0
        while True:
            if max_lines is not None and line_no >= max_lines:
                return
            raw = fh.readline(limit)
            if not raw:
                return
            line_no += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                while (more := fh.readline(limit)) and not more.endswith(b"\n"):
                    pass
                continue
            if line_no == 1 and raw.startswith(BOM):
                raw = raw[3:]
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except ValueError:
                continue
            problems: list = []
            example, _images = check_example(obj, category, problems)
            if example is not None:
                yield line_no, example


def dataset_iter_examples(*, dataset: Dataset) -> Iterator[dict]:
    """Yield the dataset's examples in file order, normalized (see ``datasets.schema``).

    ``{"messages": [...], "tools"?: [...]}`` for SFT categories (legacy input/target
    lines converted to a user and an assistant turn), and
    ``{"messages": [...prompt...], "preferred_output": [...], "non_preferred_output": [...]}``
    for DPO. Lines with errors are skipped (a ready dataset has none).
    """
    for _line, example in _iter_valid(dataset):
        yield example


def dataset_preview(*, dataset: Dataset, limit: int = 10) -> list[tuple[int, dict]]:
    """The first ``limit`` valid examples with their line numbers."""
    if not dataset.file:
        return []
    try:
        # Scan a bounded head of the file: the preview never reads a big file through.
        return list(islice(_iter_valid(dataset, line_limit=PREVIEW_LINE_BYTES, max_lines=limit * 20), limit))
    except OSError:
        return []


def with_first_error(qs):
    """Annotate each dataset with its first error, for ``dataset_status_details`` without a query per row."""
    from django.db.models import OuterRef, Subquery

    first = ValidationIssue.objects.filter(dataset=OuterRef("pk"), severity=Severity.ERROR).order_by("id")
    return qs.annotate(
        first_error_line=Subquery(first.values("line")[:1]),
        first_error_path=Subquery(first.values("path")[:1]),
        first_error_message=Subquery(first.values("message")[:1]),
        first_error_args=Subquery(first.values("message_args")[:1]),
    )


def dataset_status_details(*, dataset: Dataset) -> str | None:
    """A one-paragraph summary of the validation result (the API's status_details)."""
    if dataset.status not in FINAL_STATUSES:
        return None
    if dataset.status == Status.INVALID and not dataset.error_count:
        return dataset.status_text or _("Validation failed.")
    parts = []
    if dataset.error_count:
        parts.append(ngettext("%(n)s error", "%(n)s errors", dataset.error_count) % {"n": f"{dataset.error_count:,}"})
        if hasattr(dataset, "first_error_message"):  # annotated by with_first_error()
            first = (
                dataset.first_error_line,
                dataset.first_error_path,
                render(dataset.first_error_args, dataset.first_error_message),
            )
        else:
            issue = dataset.issues.filter(severity=Severity.ERROR).order_by("id").first()
            first = (issue.line, issue.path, issue.text) if issue else (None, None, None)
        line, path, message = first
        if message is not None:
            where = _("line %(line)s") % {"line": line} if line else _("file")
            where = f"{where} {path}" if path else where
            parts.append(_("first: %(where)s: %(message)s") % {"where": where, "message": message})
    else:
        parts.append(
            ngettext(
                "%(examples)s example, %(tokens)s tokens (%(category)s)",
                "%(examples)s examples, %(tokens)s tokens (%(category)s)",
                dataset.examples,
            )
            % {
                "examples": f"{dataset.examples:,}",
                "tokens": f"{dataset.tokens:,}" if dataset.tokens is not None else "?",
                "category": dataset.category,
            }
        )
    if dataset.warning_count:
        parts.append(
            ngettext("%(n)s warning", "%(n)s warnings", dataset.warning_count) % {"n": f"{dataset.warning_count:,}"}
        )
    if dataset.status_message:
        parts.append(dataset.status_text)
    return "; ".join(parts)


# --- delete -----------------------------------------------------------------


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete the dataset and its files, unless a fine-tuning task used it (DatasetInUse)."""
    names = [f.name for f in (dataset.file, dataset.report) if f]
    try:
        with transaction.atomic():
            # Lock the row first: a validation finishing at this moment writes its issues under
            # the same lock, so either they are written before and deleted with the dataset, or
            # the validator finds the dataset gone. Without it, PostgreSQL commits the delete
            # after the issues' insert and the foreign key fails.
            locked = Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
            if locked is not None:
                locked.delete()
    except ProtectedError as exc:
        raise DatasetInUse(sorted(exc.protected_objects, key=lambda job: job.pk)) from None
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete %s", name)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def dataset_details(dataset: Dataset) -> list[str]:
    """What tells apart datasets of the same name: kind, examples, the upload's time and size (the task create
    form's picker and the compare page show them after the name)."""
    from django.contrib.humanize.templatetags.humanize import intcomma
    from django.utils.formats import date_format

    examples = dataset.examples or 0
    return [
        dataset.get_category_display(),
        ngettext("%(n)s example", "%(n)s examples", examples) % {"n": intcomma(examples)},
        date_format(timezone.localtime(dataset.created_at), "Y-m-d H:i"),
        human_bytes(dataset.bytes),
    ]


def dataset_label(dataset: Dataset) -> str:
    """The dataset's name and its details on one line, as a picker lists it."""
    return " · ".join([dataset.name, *dataset_details(dataset)])
