"""Merging a LoRA adapter into its base model: what a runtime that cannot load adapters serves, and what the
model card's merged download holds. Paths only, no Django: the worker runs it in a child process
(``python -m deployments.merging BASE ADAPTER OUT``), so that torch and the model leave its memory afterwards."""

from __future__ import annotations

import fcntl
import logging
import shutil
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
)


def merge_lora(base: Path, adapter: Path, out: Path) -> Path:
    """Merge ``adapter`` into ``base`` and save it with tokenizer files at ``out``, once, under a lock."""
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "config.json").exists():  # another process merged it meanwhile
            return out
        logger.info("merging %s into %s -> %s", adapter, base, out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            import torch
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
            base_dtype = _config_dtype(base)
            if base_dtype is not None:
                merged = merged.to(base_dtype)
            merged.save_pretrained(tmp, safe_serialization=True)
            for source in (base, adapter):  # the adapter's tokenizer files win over the base's
                for name in TOKENIZER_FILES:
                    if (source / name).exists():
                        shutil.copy(source / name, tmp / name)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _config_dtype(folder: Path):
    import json

    import torch

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    return getattr(torch, name, None) if isinstance(name, str) else None


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m deployments.merging BASE_FOLDER ADAPTER_FOLDER OUT_FOLDER")
    print(merge_lora(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])), flush=True)
