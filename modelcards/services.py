"""Model-card state changes: deleting a fine-tuned model, and packaging one for download."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from django.db import transaction
from django.utils import timezone

from common import storage

from .models import FineTunedModel
from .signals import fine_tuned_model_deleted, fine_tuned_model_weights_changed

logger = logging.getLogger(__name__)


class ModelActionRefused(Exception):
    """A promotion or a delete that cannot be done now; the message says why and what to do."""


def fine_tuned_model_delete(*, model: FineTunedModel, _with_result: bool = False) -> FineTunedModel:
    """Delete a fine-tuned model: its files and every deployment of it go; its code can no longer be called.
    A result takes its checkpoint models with it; a checkpoint promoted to be its result's weights is refused.

    The card row stays (marked deleted) so that usage records keep their model, and the code is never reused.
    """
    from django.utils.translation import gettext as _

    with transaction.atomic():
        locked = FineTunedModel.objects.select_for_update().get(pk=model.pk)
        if locked.deleted_at is not None:
            return locked
        if (
            locked.is_checkpoint
            and not _with_result
            and FineTunedModel.objects.live().filter(promoted_from=locked).exists()
        ):
            raise ModelActionRefused(
                _(
                    "%(code)s is promoted: %(result)s serves its weights. Use the final weights again (or promote "
                    "another checkpoint) first."
                )
                % {"code": locked.code, "result": locked.checkpoint_of.code}
            )
        for checkpoint in FineTunedModel.objects.live().filter(checkpoint_of=locked):
            fine_tuned_model_delete(model=checkpoint, _with_result=True)
        locked.deleted_at = timezone.now()
        locked.save(update_fields=["deleted_at"])
        fine_tuned_model_deleted.send(sender=FineTunedModel, model=locked)
        paths = sorted({p for p in (locked.path, locked.final_path) if p})
        transaction.on_commit(lambda: [_delete_files(path) for path in paths])
    return locked


def fine_tuned_model_promote(*, checkpoint: FineTunedModel) -> FineTunedModel:
    """Make a checkpoint's weights its result's: the result's code serves them from now on (its final weights are
    kept, to come back to with ``fine_tuned_model_restore_final``). Refused while something serves the result's
    current weights (a running deployment: ``cards.promotion_blockers``). Returns the result."""
    from django.utils.translation import gettext as _

    with transaction.atomic():
        point = FineTunedModel.objects.select_for_update().get(pk=checkpoint.pk)
        if not point.is_checkpoint or point.deleted_at is not None:
            raise ModelActionRefused(_("Only a checkpoint of a fine-tuned model can be promoted."))
        result = FineTunedModel.objects.select_for_update().get(pk=point.checkpoint_of_id)
        if result.deleted_at is not None:
            raise ModelActionRefused(_("%(code)s was deleted.") % {"code": result.code})
        if result.promoted_from_id == point.pk:
            return result
        _replace_weights(result, path=point.path, promoted_from=point)
    return result


def fine_tuned_model_restore_final(*, model: FineTunedModel) -> FineTunedModel:
    """A promoted result serves the task's final weights again."""
    with transaction.atomic():
        result = FineTunedModel.objects.select_for_update().get(pk=model.pk)
        if result.deleted_at is None and result.final_path:
            _replace_weights(result, path=result.final_path, promoted_from=None)
    return result


def _replace_weights(result: FineTunedModel, *, path: str, promoted_from: FineTunedModel | None) -> None:
    from .cards import promotion_blockers

    blockers = promotion_blockers(result)
    if blockers:
        raise ModelActionRefused(" ".join(blockers))
    previous = result.serving_name
    if not result.final_path:
        result.final_path = result.path
    result.path = path
    result.promoted_from = promoted_from
    if promoted_from is None:
        result.final_path = ""
    result.save(update_fields=["path", "final_path", "promoted_from"])
    transaction.on_commit(
        lambda: fine_tuned_model_weights_changed.send_robust(
            sender=FineTunedModel, model=result, previous_name=previous
        )
    )


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
    checkpoints = [c.code for c in model.checkpoints.live().order_by("step")]
    return [
        _("The model %(code)s: calls with this code will fail.") % {"code": model.code},
        ngettext("Its %(n)s file (%(size)s) on this server.", "Its %(n)s files (%(size)s) on this server.", len(files))
        % {"n": len(files), "size": filesizeformat(size)},
        *(
            [
                ngettext("Its checkpoint model %(codes)s.", "Its %(n)s checkpoint models: %(codes)s.", len(checkpoints))
                % {"n": len(checkpoints), "codes": ", ".join(checkpoints)}
            ]
            if checkpoints
            else []
        ),
        *delete_consequences(model),
        *[line for c in model.checkpoints.live() for line in delete_consequences(c)],
    ]


def fine_tuned_model_files(model: FineTunedModel) -> list[storage.StoredFile]:
    """The files a download holds, from storage: weights, configs and tokenizer files (no training state)."""
    if not model.path:
        return []
    skip = {
        "training_result.json",
        "optimizer.pt",
        "scheduler.pt",
        "trainer_state.json",
        "rng_state.pth",
        "training_state.pt",
        "trainable.safetensors",
    }  # the last two: a checkpoint's resume state
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
