"""Files in OpenAI's fine-tuning formats validate and train as they are (issue 19, item 1): the chat format (with
``weight`` on assistant turns, content as text parts, ``name``, tools with ``parallel_tool_calls``) and the
preference format (``input`` with ``tools`` and ``parallel_tool_calls``). Bad weights are errors with their line."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from jobs.training.render import Renderer

from .datasets_support import run_validator
from .openai_formats_support import jsonl, openai_chat_lines, openai_preference_lines


def test_openais_chat_format_validates_as_it_is():
    result, report = run_validator(jsonl(openai_chat_lines()), advised_min_examples=1)
    assert result.error_count == 0, report
    assert result.category == "function_call" and result.examples == 24 and result.legacy_examples == 0


def test_openais_preference_format_validates_as_it_is():
    result, report = run_validator(jsonl(openai_preference_lines()), advised_min_examples=1)
    assert result.error_count == 0, report
    # a preference line has an "input" but is no legacy input/target line to convert
    assert result.category == "dpo" and result.examples == 12 and result.legacy_examples == 0


@pytest.mark.parametrize(
    ("weight_at", "weight", "path", "message"),
    [
        (2, 2, "messages[2].weight", "weight must be 0 (not learnt) or 1 (learnt), not 2."),
        (2, True, "messages[2].weight", "weight must be 0 (not learnt) or 1 (learnt), not true."),
        (1, 0, "messages[1].weight", "weight applies to assistant turns only"),
        (4, 0, "messages", "Every assistant turn has weight 0"),
    ],
)
def test_a_bad_weight_is_an_error_on_its_line(weight_at, weight, path, message):
    lines = openai_chat_lines(4)
    lines[2]["messages"][weight_at]["weight"] = weight
    result, report = run_validator(jsonl(lines), advised_min_examples=1)
    assert [(e.line, e.path) for e in result.errors] == [(3, path)], report
    assert f"3,error,{path}," in report and message in report, report  # the line's row of the CSV report


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _learnt(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, m in zip(encoded.input_ids, encoded.loss_mask, strict=True) if m])


def test_a_turn_of_weight_0_is_context_and_not_learnt(tokenizer):
    renderer = Renderer(tokenizer, max_seq_len=512)
    line = openai_chat_lines(2)[1]
    encoded = renderer.encode_sft(line)
    text = tokenizer.decode(encoded.input_ids)
    assert "Let me look that up." in text and "You answer questions about widgets." in text  # in the context
    assert _learnt(tokenizer, encoded) == "Widget 0 is red.<|im_end|>"  # only the weight-1 answer is learnt
    del line["messages"][2]["weight"]  # without a weight, every assistant turn is learnt, as before
    assert _learnt(tokenizer, renderer.encode_sft(line)) == "Let me look that up.<|im_end|>Widget 0 is red.<|im_end|>"
