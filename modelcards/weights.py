"""Where a base model's weights are, as a folder every tool loads quickly.

A GGUF file shipped by a package (the embedded default) is dequantized once by
transformers and saved as a safetensors folder under ``var/models/<code>/``;
afterwards everything (training, tokenizing, serving) loads that folder.
Conversion is done under a file lock, into a temporary folder renamed into
place, so two workers never half-write it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from .models import BaseModel, WeightsSource

logger = logging.getLogger(__name__)


class WeightsMissing(Exception):
    """The base model's weights are not on this server."""


def gguf_path(location: str) -> Path:
    """Resolve ``package:file.gguf`` to the file inside the installed package."""
    package, _sep, filename = location.partition(":")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / filename
            if candidate.exists():
                return candidate
    raise WeightsMissing(f"package {package} with {filename} is not installed")


def model_dir(base_model: BaseModel) -> Path:
    """A folder with config.json, weights and tokenizer files for ``base_model``."""
    location = base_model.weights_location.strip()
    if base_model.weights_source == WeightsSource.GGUF_PACKAGE:
        return ensure_converted(gguf_path(location), base_model.converted_dir)
    present, where = base_model.weights_status()
    if not present:
        raise WeightsMissing(where)
    if base_model.weights_source == WeightsSource.HF_CACHE:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, local_files_only=True))
    return Path(location)


def ensure_converted(gguf_file: Path, out_dir: Path) -> Path:
    """Convert ``gguf_file`` into a safetensors folder at ``out_dir`` once."""
    if (out_dir / "config.json").exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out_dir / "config.json").exists():  # another worker finished it meanwhile
            return out_dir
        logger.info("converting %s into %s", gguf_file, out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
        try:
            convert_gguf(gguf_file, tmp)
            tmp.rename(out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantize a GGUF model with transformers and save it as bf16 safetensors.

    ``save_pretrained`` refuses a model loaded from GGUF, so a fresh model is
    built from its config (without ``quantization_config``) and given the
    dequantized state dict.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


@lru_cache(maxsize=8)
def _tokenizer_from(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def load_tokenizer(base_model: BaseModel):
    """The base model's tokenizer (with its chat template), cached per process."""
    return _tokenizer_from(str(model_dir(base_model)))
