"""What an instance serves: the folder of a base model, of a full fine-tune, or of a LoRA fine-tune merged into
its base (``transformers serve`` cannot load a PEFT adapter folder). Paths are computed cheaply here; the heavy
work (converting a GGUF base once, merging an adapter once) is ``prepare()``, run by the instance's own process
before its server starts, so a failure lands in the instance's log and is shown as its error.

A fine-tune's files are in storage (common.storage): the node that serves it reads them from a local folder,
the storage's own on the filesystem backend, else a copy fetched once into that node's cache by ``prepare()``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from common import storage
from modelcards.models import BaseModel, FineTunedModel, WeightsSource
from modelcards.weights import WeightsMissing, model_dir

from .merging import merge_lora

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    code: str
    folder: Path  # what a runtime that cannot load adapters loads (the merged folder for a LoRA fine-tune)
    base: BaseModel
    base_folder: Path
    adapter: Path | None = None  # a LoRA fine-tune's adapter folder
    stored: str = ""  # a fine-tune's folder in storage, fetched into ``adapter`` (or ``folder``) by prepare()
    name: str = ""  # what model servers know these weights by (the code; tagged after a promotion)

    @property
    def weights_name(self) -> str:
        return self.name or self.code

    @property
    def is_lora(self) -> bool:
        return self.adapter is not None


def base_folder(base: BaseModel) -> Path:
    """Where the base model's loadable folder is (or will be, for a GGUF that is converted on first use)."""
    location = base.weights_location.strip()
    if base.weights_source == WeightsSource.GGUF_PACKAGE:
        return base.converted_dir
    if base.weights_source == WeightsSource.HF_CACHE:
        snapshot = base._hf_snapshot()
        if snapshot is None:
            raise WeightsMissing(base.weights_status()[1])
        return snapshot
    if not location:
        raise WeightsMissing(base.weights_status()[1])
    return Path(location)


def merged_dir(model: FineTunedModel, name: str = "") -> Path:
    return Path(settings.MODELS_DIR) / "merged" / (name or model.serving_name)


def target_of(model: BaseModel | FineTunedModel) -> Target:
    if isinstance(model, BaseModel):
        return Target(model.code, base_folder(model), model, base_folder(model))
    base = model.base_model
    files = storage.local_path(model.path)  # where this node reads them; nothing is fetched here
    if model.is_lora:
        return Target(
            model.code, merged_dir(model), base, base_folder(base), files, stored=model.path, name=model.serving_name
        )
    return Target(model.code, files, base, base_folder(base), stored=model.path, name=model.serving_name)


def is_prepared(target: Target) -> bool:
    return (target.folder / "config.json").exists()


def prepare(target: Target, *, merge: bool = True) -> Path:
    """Make ``target.folder`` loadable: convert the base once; merge a LoRA adapter once (if ``merge``)."""
    folder = model_dir(target.base)  # converts a packaged GGUF once; raises WeightsMissing
    if target.stored and not (target.adapter is not None and is_prepared(target) and merge):
        try:
            storage.local_folder(target.stored)  # the fine-tune's files on this node, fetched once
        except storage.StorageError as exc:
            raise WeightsMissing(f"the files of {target.code} cannot be read: {exc}") from exc
    if target.adapter is None:
        if not (target.folder / "config.json").exists():
            raise WeightsMissing(f"{target.folder} has no model in it (config.json is missing)")
        return target.folder
    if not (target.adapter / "adapter_config.json").exists():
        raise WeightsMissing(f"{target.adapter} has no LoRA adapter in it (adapter_config.json is missing)")
    if merge:
        merge_lora(folder, target.adapter, target.folder)
    return target.folder
