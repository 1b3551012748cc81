"""Model-card state changes: deleting a fine-tuned model, and packaging one for download."""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath

from django.db import transaction
from django.utils import timezone

from console import storage

from .models import FineTunedModel
from .signals import fine_tuned_model_deleted

logger = logging.getLogger(__name__)


def fine_tuned_model_delete(*, model: FineTunedModel) -> FineTunedModel:
    """Delete a fine-tuned model: its files and every deployment of it go; its code can no longer be called.

    The card row stays (marked deleted) so that usage records keep their model, and the code is never reused.
    """
    with transaction.atomic():
        locked = FineTunedModel.objects.select_for_update().get(pk=model.pk)
        if locked.deleted_at is not None:
            return locked
        locked.deleted_at = timezone.now()
        locked.save(update_fields=["deleted_at"])
        fine_tuned_model_deleted.send(sender=FineTunedModel, model=locked)
        path = locked.path
        transaction.on_commit(lambda: _delete_files(path))
    return locked


def _delete_files(name: str) -> None:
    """The model's folder in storage, and this machine's cached copy of it."""
    if not name:
        return
    try:
        storage.delete_folder(name)
    except Exception:  # the card is deleted already; a file left behind is logged, not raised
        logger.exception("could not delete the files of %s", name)
    storage.forget_local(name)


def fine_tuned_model_delete_preview(*, model: FineTunedModel) -> list[str]:
    """What a delete takes with it, in sentences for the confirmation page."""
    from django.template.defaultfilters import filesizeformat
    from django.utils.translation import gettext as _
    from django.utils.translation import ngettext

    from .cards import delete_consequences

    files = fine_tuned_model_files(model)
    size = sum(f.size for f in files)
    return [
        _("The model %(code)s: calls with this code will fail.") % {"code": model.code},
        ngettext("Its %(n)s file (%(size)s) on this server.", "Its %(n)s files (%(size)s) on this server.",
                 len(files)) % {"n": len(files), "size": filesizeformat(size)},
        *delete_consequences(model),
    ]


def fine_tuned_model_files(model: FineTunedModel) -> list[storage.StoredFile]:
    """The files a download holds, from storage: weights, configs and tokenizer files (no training state)."""
    if not model.path:
        return []
    skip = {"training_result.json", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"}
    try:
        files = storage.list_folder(model.path)
    except Exception:  # the storage cannot be reached: the page says the files are not here
        logger.exception("could not list the files of %s", model.code)
        return []
    return [f for f in files if "/" not in f.relative and f.basename not in skip]


def portable_adapter_config(model: FineTunedModel, raw: bytes) -> bytes:
    """adapter_config.json with ``base_model_name_or_path`` set to the base model's public name.

    Training writes this server's folder there; peft elsewhere needs a name it can resolve.
    """
    config = json.loads(raw)
    base = model.base_model
    config["base_model_name_or_path"] = base.public_name or base.code
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


class _Pipe:
    """A write-only file that zipfile writes into, read out in chunks as the response streams."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        if data:
            self.chunks.append(bytes(data))
            self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def fine_tuned_model_zip(model: FineTunedModel, *, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream the model's files as a zip under a folder named after the code, without a temp file."""
    folder_name = model.code.replace(":", "-")
    pipe = _Pipe()
    stamp = (model.created_at or timezone.now()).timetuple()[:6]
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for file in fine_tuned_model_files(model):
            arcname = f"{folder_name}/{file.basename}"
            if file.basename == "adapter_config.json":
                with storage.open_stream(file.name) as source:
                    archive.writestr(arcname, portable_adapter_config(model, source.read()))
            else:
                deflate = PurePosixPath(file.basename).suffix in {".json", ".jinja", ".txt", ".model", ".md"}
                info = zipfile.ZipInfo(arcname, date_time=stamp)
                info.external_attr = 0o644 << 16
                info.file_size = file.size
                info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
                with storage.open_stream(file.name) as source, archive.open(info, "w", force_zip64=True) as target:
                    while block := source.read(chunk_size):
                        target.write(block)
                        if pipe.offset and len(pipe.chunks) > 0:
                            yield pipe.take()
            data = pipe.take()
            if data:
                yield data
    data = pipe.take()
    if data:
        yield data
