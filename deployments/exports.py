"""The merged download of a LoRA fine-tune: its adapter merged into the base model, saved as safetensors with the
tokenizer files (it loads with ``AutoModelForCausalLM.from_pretrained`` anywhere, no peft needed).

Built once, on a worker, into storage beside the other exports; every later download streams the stored files.
Every change of an export's state is here: asked for (queued), claimed by a worker (building, a conditional
update so a redelivered task does nothing), ready or failed with the reason. A build whose worker died is
asked for again by the next request once it is ``STALE_AFTER`` old; a failed one likewise, at once.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common import storage
from common.queueing import enqueue_on_commit
from common.states import StateMachine
from console.errors import without_server_paths
from modelcards.models import FineTunedModel
from modelcards.weights import WeightsMissing, model_dir

from .models import ExportStatus, MergedExport

X = ExportStatus
# Every change of MergedExport.status goes through this table, in this module (its only writer): asked for
# (again after a failure, or when a run stalled), claimed by a worker, built or failed.
EXPORT = StateMachine(
    MergedExport,
    {
        X.QUEUED: {X.QUEUED, X.BUILDING, X.FAILED},
        X.BUILDING: {X.QUEUED, X.READY, X.FAILED},
        X.READY: set(),
        X.FAILED: {X.QUEUED},
    },
)

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=1)  # a build that has not finished by then lost its worker
MERGE_TIMEOUT_SECONDS = 3 * 3600


class ExportNotNeeded(Exception):
    """A full fine-tune's own download is the whole model already."""


def export_folder(model: FineTunedModel) -> str:
    return f"exports/{model.owner_id}/{model.pk}/merged"


def merged_export_of(model: FineTunedModel) -> MergedExport | None:
    return MergedExport.objects.filter(fine_tuned_model=model).first()


def merged_export_request(*, model: FineTunedModel) -> MergedExport:
    """Ask for the merged download: a no-op while one is ready or being built, else queued for a worker."""
    if not model.is_lora:
        raise ExportNotNeeded(model.code)
    with transaction.atomic():
        export, _created = MergedExport.objects.select_for_update().get_or_create(fine_tuned_model=model)
        in_flight = export.status in (ExportStatus.QUEUED, ExportStatus.BUILDING)
        if export.status == ExportStatus.READY or (in_flight and not _created and not _stale(export)):
            return export
        EXPORT.set(export, X.QUEUED, fields=["updated_at"], error="", finished_at=None)
        pk = export.pk
        enqueue_on_commit(
            "deployments.build_merged_export",
            pk,
            on_failure=lambda exc: _fail(
                pk, f"No worker could be reached to build it ({type(exc).__name__}); try again later."
            ),
        )
    return export


def _stale(export: MergedExport) -> bool:
    return export.updated_at < timezone.now() - STALE_AFTER


def _fail(export_id: int, reason: str) -> None:
    now = timezone.now()
    EXPORT.move(export_id, [X.QUEUED, X.BUILDING], X.FAILED, error=reason, finished_at=now, updated_at=now)


def merged_export_build(*, export_id: int) -> MergedExport | None:
    """Build a queued export (a worker's task): merge in a child process, store the folder, mark it ready.

    Returns None when there was nothing to do (already claimed, built, or gone)."""
    claimed = EXPORT.move(export_id, [X.QUEUED], X.BUILDING, updated_at=timezone.now())
    if not claimed:
        return None
    export = MergedExport.objects.select_related("fine_tuned_model__base_model").get(pk=export_id)
    model = export.fine_tuned_model
    scratch = Path(tempfile.mkdtemp(prefix=f"export-{export_id}-", dir=_scratch_root()))
    try:
        if model.deleted_at is not None:
            raise RuntimeError("the fine-tuned model was deleted")
        try:
            base = model_dir(model.base_model)  # converts a packaged GGUF once
        except WeightsMissing as exc:
            raise WeightsMissing(f"the base model {model.base_model.code} cannot be read here: {exc}") from exc
        adapter = storage.local_folder(model.path)
        out = scratch / "merged"
        _merge_in_child(base, adapter, out)
        folder = storage.upload_folder(out, export_folder(model), move=True)
        size = sum(f.size for f in storage.list_folder(folder))
    except (WeightsMissing, storage.StorageError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        logger.warning("the merged export of %s failed: %s", model.code, exc)
        _fail(export_id, without_server_paths(str(exc)) or type(exc).__name__)  # the log has the paths
        return MergedExport.objects.get(pk=export_id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    now = timezone.now()
    EXPORT.move(export_id, [X.BUILDING], X.READY, folder=folder, size_bytes=size, finished_at=now, updated_at=now)
    return MergedExport.objects.get(pk=export_id)


def _scratch_root() -> Path:
    root = Path(settings.MODELS_DIR) / "exports"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _merge_in_child(base: Path, adapter: Path, out: Path) -> None:
    """deployments.merging in a fresh process: torch and the model leave the worker's memory with it."""
    done = subprocess.run(
        [sys.executable, "-m", "deployments.merging", str(base), str(adapter), str(out)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=MERGE_TIMEOUT_SECONDS,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise RuntimeError(f"merging the adapter into its base failed: {last}")


def merged_export_files(export: MergedExport) -> list[storage.StoredFile]:
    if export.status != ExportStatus.READY or not export.folder:
        return []
    return storage.list_folder(export.folder)


def merged_export_zip(export: MergedExport) -> Iterator[bytes]:
    model = export.fine_tuned_model
    return storage.zip_stream(
        f"{model.code.replace(':', '-')}-merged",
        merged_export_files(export),
        stamp=export.finished_at or timezone.now(),
    )


def merged_export_delete_files(model: FineTunedModel) -> None:
    """With its fine-tune (after the delete's commit): the stored merged folder."""
    try:
        storage.delete_folder(export_folder(model))
    except Exception:  # noqa: BLE001 - the model is deleted already; a file left behind is logged
        logger.exception("could not delete the merged export of %s", model.code)
