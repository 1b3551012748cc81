"""Model-card state changes: deleting a fine-tuned model, and packaging one for download."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

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


def fine_tuned_model_zip(model: FineTunedModel) -> Iterator[bytes]:
    """Stream the model's files as a zip under a folder named after the code, without a temp file; the adapter's
    config names the base model's public name (portable_adapter_config)."""
    return storage.zip_stream(
        model.code.replace(":", "-"),
        fine_tuned_model_files(model),
        stamp=model.created_at or timezone.now(),
        rewrite={"adapter_config.json": lambda raw: portable_adapter_config(model, raw)},
    )
