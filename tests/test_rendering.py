"""One renderer for billing and training: the tokens counted for a file are the tokens the engine trains on,
for every text category, with the embedded default's ChatML template and with a GLM-4 style template
(tools passed to the template, tool results as observations, the end of each turn learnt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets.tokenizer import CountingTokenizer
from jobs.training.render import Renderer

from .datasets_support import run_validator, sample
from .tiny_glm4 import build_tiny_glm4
from .tiny_model import _real_model_dir

TEXT_SAMPLES = ["chat.jsonl", "function_call.jsonl", "reasoning.jsonl", "dpo.jsonl", "legacy_input_target.jsonl"]


@pytest.fixture(scope="session")
def glm4_dir(tmp_path_factory) -> Path:
    return build_tiny_glm4(tmp_path_factory.mktemp("tiny-glm4") / "model", _real_model_dir())


@pytest.fixture(scope="session", params=["smollm2", "glm4"])
def model_folder(request) -> Path:
    return _real_model_dir() if request.param == "smollm2" else request.getfixturevalue("glm4_dir")


def trained_tokens(folder: Path, path: Path) -> int:
    """What the engine feeds the model for a file: every conversation's token ids, untruncated."""
    from transformers import AutoTokenizer

    renderer = Renderer(AutoTokenizer.from_pretrained(str(folder)), max_seq_len=10**6)
    total = 0
    for raw in path.read_bytes().splitlines():
        example = json.loads(raw)
        if "preferred_output" in example:
            pair = renderer.encode_dpo(example)
            total += len(pair.chosen.input_ids) + len(pair.rejected.input_ids)
        else:
            total += len(renderer.encode_sft(example).input_ids)
    return total


@pytest.mark.parametrize("name", TEXT_SAMPLES)
def test_counted_tokens_equal_the_tokens_the_engine_trains_on(model_folder, name):
    counted, _ = run_validator(
        sample(name).read_bytes(), tok=CountingTokenizer.from_folder(model_folder), context_length=10**6
    )
    assert counted.error_count == 0
    assert counted.tokens == trained_tokens(model_folder, sample(name)) > 0


def _glm_renderer(glm4_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(glm4_dir))
    return tokenizer, Renderer(tokenizer, max_seq_len=4096)


def test_tools_reach_the_glm4_template_as_it_expects_them(glm4_dir):
    tokenizer, renderer = _glm_renderer(glm4_dir)
    example = json.loads(sample("function_call.jsonl").read_bytes().splitlines()[0])
    encoded = renderer.encode_sft(example)
    text = tokenizer.decode(encoded.input_ids)
    name = example["tools"][0]["function"]["name"]
    assert text.startswith("[gMASK]<sop><|system|>") and f"## {name}" in text  # the tools block, not folded
    call = next(m for m in example["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert f"<|assistant|>{call['name']}\n{{" in text  # a call is the function's name, then its arguments
    assert "<|observation|>\n" in text  # tool results as observations
    assert "<tool_call>" not in text and "<tools>" not in text  # nothing folded into the text


def test_the_end_of_each_glm4_turn_is_learnt(glm4_dir):
    tokenizer, renderer = _glm_renderer(glm4_dir)
    example = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye!"},
        ]
    }
    encoded = renderer.encode_sft(example)
    trained = [
        tokenizer.convert_ids_to_tokens(i) for i, m in zip(encoded.input_ids, encoded.loss_mask, strict=True) if m
    ]
    # The first answer ends where the model says <|user|>; the last one with an appended <|endoftext|>.
    assert "<|user|>" in trained and trained[-1] == "<|endoftext|>"
    assert encoded.input_ids[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # and the counter bills that appended token too
    counted, _ = run_validator(
        (json.dumps(example) + "\n").encode(), tok=CountingTokenizer.from_folder(glm4_dir), context_length=4096
    )
    assert counted.tokens == len(encoded.input_ids)


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_a_tiny_glm4_trains_with_chat_function_call_and_reasoning_data(glm4_dir, tmp_path, method):
    from jobs.training.engine import TrainingConfig, train

    if method == "sft":
        examples = [
            json.loads(raw)
            for name in ("chat.jsonl", "function_call.jsonl", "reasoning.jsonl")
            for raw in sample(name).read_bytes().splitlines()
        ]
    else:
        examples = [json.loads(raw) for raw in sample("dpo.jsonl").read_bytes().splitlines()]
    config = TrainingConfig(
        method=method, n_epochs=3, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, num_threads=1, max_seq_len=1024
    )
    result = train(
        model_dir=glm4_dir, train_examples=examples, eval_examples=examples[:4], config=config, output_dir=tmp_path
    )
    evals = [h["eval_loss"] for h in result.history if h["eval_loss"] is not None]
    assert len(evals) == 3 and evals[-1] < evals[0]
    assert (result.output_dir / "adapter_model.safetensors").exists()
