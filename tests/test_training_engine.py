"""The training engine on a tiny random model: rendering and masks, packing, SFT/DPO, LoRA/full,
cancel, checkpoints and resume, bad data, metric rate. No database needed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from jobs.training import engine
from jobs.training.engine import (
    Callbacks,
    TrainingCancelled,
    TrainingConfig,
    TrainingDataError,
    split_examples,
    train,
)
from jobs.training.packing import build_micro_batches, register_attention
from jobs.training.render import Renderer, RenderError

from .tiny_model import build_tiny_model

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The shared tiny model with larger token embeddings: with the default init (std 0.02) a
    32-wide model's logits are nearly uniform and LoRA alone cannot move them far."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_tiny_model(tmp_path_factory.mktemp("engine-tiny") / "model")
    folder = base.parent / "wide-embeddings"
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


@pytest.fixture
def renderer(tokenizer) -> Renderer:
    return Renderer(tokenizer, max_seq_len=512)


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


MEMO = [chat(f"What is code {i}?", f"Code {i} is {word}.") for i, word in enumerate(["red", "blue", "green", "gold"])]


class Recorder(Callbacks):
    def __init__(self, stop_after_metrics: int | None = None):
        self.events: list[tuple[str, str, dict | None]] = []
        self.metric_log: list[dict] = []
        self.metric_times: list[float] = []
        self.checkpoints: list[tuple[int, Path]] = []
        self.mid_epoch: list[tuple[int, Path]] = []
        self.polls = 0
        self.stop = False

    def event(self, level, message, data=None):
        self.events.append((level, message, data))

    def metrics(self, data):
        self.metric_log.append(data)
        self.metric_times.append(time.monotonic())

    def checkpoint(self, epoch, path, *, step=0, complete=True):
        if complete:
            self.checkpoints.append((epoch, path))
        else:
            self.mid_epoch.append((step, path))

    def should_stop(self):
        self.polls += 1
        return self.stop


def masked_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, m in zip(encoded.input_ids, encoded.loss_mask, strict=True) if m])


# ------------------------------------------------------------------ rendering and masks


def test_loss_mask_covers_only_assistant_turns(renderer, tokenizer):
    example = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."},
        ]
    }
    encoded = renderer.encode_sft(example)
    full = tokenizer.decode(encoded.input_ids)
    assert "Be brief." in full and "Hi there" in full
    # only the two answers and their end-of-turn tokens carry loss
    assert masked_text(tokenizer, encoded) == "Hello!<|im_end|>Goodbye.<|im_end|>"


def test_default_system_prompt_and_legacy(renderer, tokenizer):
    encoded = renderer.encode_sft({"input": "2+2?", "target": "4"})
    full = tokenizer.decode(encoded.input_ids)
    assert full.startswith("<|im_start|>system\n")  # the template's default system prompt
    assert "<|im_start|>user\n2+2?<|im_end|>" in full
    assert masked_text(tokenizer, encoded) == "4<|im_end|>"


def test_reasoning_rendered_in_think_block(renderer, tokenizer):
    example = {
        "messages": [
            {"role": "user", "content": "Is 7 prime?"},
            {"role": "assistant", "content": "Yes.", "reasoning_content": "7 has no divisors but 1 and 7."},
        ]
    }
    encoded = renderer.encode_sft(example)
    assert masked_text(tokenizer, encoded) == "<think>\n7 has no divisors but 1 and 7.\n</think>\n\nYes.<|im_end|>"


def test_tool_calls_and_tools_rendered(renderer, tokenizer):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    example = {
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
            {"role": "assistant", "content": "It is 21 degrees."},
        ],
    }
    encoded = renderer.encode_sft(example)
    full = tokenizer.decode(encoded.input_ids)
    assert "<tools>" in full and "get_weather" in full.split("<|im_start|>user")[0]  # tools in the system turn
    assert '<tool_response>\n{"temp": 21}\n</tool_response>' in full
    assert masked_text(tokenizer, encoded) == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
        "It is 21 degrees.<|im_end|>"
    )


def test_dpo_masks_only_the_outputs(renderer, tokenizer):
    pair = renderer.encode_dpo(
        {
            "input": {"messages": [{"role": "user", "content": "Say hi"}]},
            "preferred_output": [{"role": "assistant", "content": "Hi!"}],
            "non_preferred_output": [{"role": "assistant", "content": "No."}],
        }
    )
    assert masked_text(tokenizer, pair.chosen) == "Hi!<|im_end|>"
    assert masked_text(tokenizer, pair.rejected) == "No.<|im_end|>"


def test_truncation_and_bad_examples(tokenizer):
    short = Renderer(tokenizer, max_seq_len=16)
    encoded = short.encode_sft(chat("hello " * 20, "answer"))
    assert encoded.truncated and len(encoded.input_ids) == 16
    with pytest.raises(RenderError):
        short.encode_sft({"messages": [{"role": "user", "content": "no answer"}]})
    with pytest.raises(RenderError, match="arguments"):
        short.encode_sft(
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]},
                ]
            }
        )


# ------------------------------------------------------------------ packing


def test_packing_keeps_examples_isolated(tiny_dir, renderer):
    """Per-example log-probs are the same packed in one row as run one by one."""
    config = TrainingConfig(training_type="full")
    model = engine.load_model(tiny_dir, config)
    model.eval()
    examples = [chat(f"question {i} " * (i + 1), f"answer number {i} " * (3 - i % 3)) for i in range(5)]
    units = [[(e.input_ids, e.loss_mask)] for e in map(renderer.encode_sft, examples)]
    with torch.no_grad():
        packed = build_micro_batches(units, list(range(5)), 4096, True, 2)
        assert len(packed) == 1 and packed[0].input_ids.shape[0] == 1  # one row, no padding
        together = engine.sequence_logps(model, packed[0])
        alone = torch.stack(
            [engine.sequence_logps(model, build_micro_batches(units, [i], 4096, True, 2)[0])[0] for i in range(5)]
        )
        padded = build_micro_batches(units, list(range(5)), 4096, False, 2)
        assert padded[0].input_ids.shape[0] == 5
        padded_logps = engine.sequence_logps(model, padded[0])
        # a packed row widened to a multiple of 64 (a bf16 run on a CPU): the padding changes no example
        widened = build_micro_batches(units, list(range(5)), 4096, True, 2, pad_multiple=64)[0]
        assert widened.input_ids.shape[1] % 64 == 0 and widened.input_ids.shape[1] > packed[0].input_ids.shape[1]
        assert widened.n_tokens == packed[0].n_tokens and torch.equal(widened.tgt, packed[0].tgt)
        widened_logps = engine.sequence_logps(model, widened)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(padded_logps, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(widened_logps, alone, rtol=1e-4, atol=1e-4)


def test_packed_attention_matches_plain_model(tiny_dir, renderer):
    """The segmented attention gives the logits of transformers' own SDPA model."""
    from transformers import AutoModelForCausalLM

    encoded = renderer.encode_sft(MEMO[0])
    ids = torch.tensor([encoded.input_ids])
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32, attn_implementation="sdpa")
    ours = AutoModelForCausalLM.from_pretrained(
        str(tiny_dir), dtype=torch.float32, attn_implementation=register_attention()
    )
    mb = build_micro_batches([[(encoded.input_ids, encoded.loss_mask)]], [0], 4096, True, 2)[0]
    with torch.no_grad():
        logits = plain(ids).logits[0]
        expected = torch.log_softmax(logits, -1)[mb.src, mb.tgt]
        got = engine.token_logps(ours, mb)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_fused_lora_matches_peft(tiny_dir, renderer):
    grads = {}
    units = [[(e.input_ids, e.loss_mask)] for e in map(renderer.encode_sft, MEMO)]
    mb = build_micro_batches(units, [0, 1, 2, 3], 4096, True, 2)[0]
    for fused in (False, True):
        torch.manual_seed(0)
        model = engine.load_model(tiny_dir, TrainingConfig(fused_lora=fused))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        (-engine.token_logps(model, mb).sum()).backward()
        grads[fused] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for name in grads[True]:
        torch.testing.assert_close(grads[True][name], grads[False][name], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ training


def _fast(**kwargs) -> TrainingConfig:
    """fp32 unless a test asks otherwise: these tests compare exact figures, which "auto" would turn to bf16 on a
    CPU with fast bf16 (its own tests: test_bf16_is_the_default_on_a_cpu_with_fast_bf16 and below)."""
    defaults = {
        "n_epochs": 3,
        "batch_size": 2,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.0,
        "num_threads": 1,
        "precision": "fp32",
    }
    return TrainingConfig(**{**defaults, **kwargs})


def test_sft_lora_trains_and_saves_adapter(tiny_dir, tmp_path):
    rec = Recorder()
    result = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 4,
        eval_examples=MEMO,
        config=_fast(n_epochs=4),
        output_dir=tmp_path,
        callbacks=rec,
    )
    epoch_ends = [m for m in rec.metric_log if m["eval_loss"] is not None]
    assert [m["epoch"] for m in epoch_ends] == [1.0, 2.0, 3.0, 4.0]
    assert epoch_ends[-1]["eval_loss"] < epoch_ends[0]["eval_loss"] - 0.5
    assert rec.metric_log[-1]["loss"] < rec.metric_log[0]["loss"]
    last = rec.metric_log[-1]
    assert last["current_steps"] == last["total_steps"] == 32 and last["remaining_time"] == 0
    assert result.trained_tokens == 4 * result.train_tokens_per_epoch and result.epochs_completed == 4
    final = result.output_dir
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "training_result.json",
    ):
        assert (final / name).exists(), name
    assert json.loads((final / "training_result.json").read_text())["steps"] == 32
    assert [e for e, _ in rec.checkpoints] == [1, 2, 3, 4]
    assert (tmp_path / "checkpoints" / "epoch-4" / "adapter_model.safetensors").exists()
    messages = [m for _, m, _ in rec.events]
    assert "Loading model" in messages and "Epoch 1/4 finished" in messages

    # the saved adapter loads with peft and has learned
    base_loss = engine.evaluate_loss(model_dir=tiny_dir, examples=MEMO, config=_fast())
    tuned_loss = engine.evaluate_loss(model_dir=tiny_dir, examples=MEMO, config=_fast(), adapter_dir=final)
    assert tuned_loss == pytest.approx(result.final_eval_loss, rel=1e-4)
    assert tuned_loss < base_loss - 0.5


def test_sft_full_trains_and_saves_model(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    result = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 4,
        eval_examples=MEMO,
        config=_fast(training_type="full", learning_rate=3e-3, packing=False),
        output_dir=tmp_path,
    )
    losses = [h["eval_loss"] for h in result.history if h["eval_loss"] is not None]
    assert losses[-1] < losses[0] - 0.5
    model = AutoModelForCausalLM.from_pretrained(str(result.output_dir))  # a plain model folder
    assert model.dtype == torch.bfloat16
    assert (result.output_dir / "tokenizer.json").exists()


def test_dpo_margin_grows(tiny_dir, tmp_path):
    pairs = [
        {
            "input": {"messages": [{"role": "user", "content": f"Greet person {i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"Hello, friend {i}!"}],
            "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
        }
        for i in range(4)
    ]
    for training_type in ("lora", "full"):
        result = train(
            model_dir=tiny_dir,
            train_examples=pairs * 2,
            eval_examples=pairs,
            config=_fast(
                method="dpo",
                training_type=training_type,
                dpo_beta=0.5,
                learning_rate=1e-2 if training_type == "lora" else 2e-3,
            ),
            output_dir=tmp_path / training_type,
        )
        evals = [h["eval_loss"] for h in result.history if h["eval_loss"] is not None]
        assert evals[-1] < evals[0] < 0.7  # starts near log(2): policy == reference
        margins = [h["reward_margin"] for h in result.history if "reward_margin" in h]
        assert margins[-1] > margins[0]


def test_should_stop_cancels_within_a_step(tiny_dir, tmp_path):
    class StopAtStep(Recorder):
        def metrics(self, data):
            super().metrics(data)
            self.stop = True

    rec = StopAtStep()
    with pytest.raises(TrainingCancelled):
        train(
            model_dir=tiny_dir,
            train_examples=MEMO * 8,
            eval_examples=None,
            config=_fast(metrics_interval=0.0),
            output_dir=tmp_path,
            callbacks=rec,
        )
    assert len(rec.metric_log) == 1 and rec.metric_log[0]["current_steps"] == 1
    assert not (tmp_path / "final").exists()


def test_checkpoint_resume_continues_exactly(tiny_dir, tmp_path):
    config = _fast(n_epochs=3)
    full = train(
        model_dir=tiny_dir, train_examples=MEMO * 2, eval_examples=MEMO, config=config, output_dir=tmp_path / "straight"
    )
    # a second run from the epoch-1 checkpoint of the first reaches the same place
    resumed_rec = Recorder()
    resumed = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=MEMO,
        config=config,
        output_dir=tmp_path / "resumed",
        callbacks=resumed_rec,
        resume_from=tmp_path / "straight" / "checkpoints" / "epoch-1",
    )
    assert [e for e, _ in resumed_rec.checkpoints] == [2, 3]
    assert resumed_rec.metric_log[0]["current_steps"] > 4  # no step of epoch 1 again
    assert resumed.steps == full.steps and resumed.trained_tokens == full.trained_tokens
    assert resumed.final_eval_loss == pytest.approx(full.final_eval_loss, rel=1e-5)
    assert resumed.final_loss == pytest.approx(full.final_loss, rel=1e-5)


def _step_losses(history: list[dict]) -> dict[int, float]:
    return {h["current_steps"]: h["loss"] for h in history}


def test_resume_mid_epoch_continues_the_interrupted_run(tiny_dir, tmp_path):
    """Interrupted at step k (inside an epoch), resumed from its time-based checkpoint: the per-step
    losses after k are those of the uninterrupted run (same data order, optimizer and RNG state)."""
    config = _fast(n_epochs=2, metrics_interval=0.0, checkpoint_interval=1e-9, lora_dropout=0.1)
    data = MEMO * 3  # 12 examples, batch 2: 6 steps an epoch
    straight = train(
        model_dir=tiny_dir,
        train_examples=data,
        eval_examples=MEMO,
        config=_fast(n_epochs=2, metrics_interval=0.0, lora_dropout=0.1),
        output_dir=tmp_path / "straight",
    )

    class StopAfter(Recorder):
        def checkpoint(self, epoch, path, *, step=0, complete=True):
            super().checkpoint(epoch, path, step=step, complete=complete)
            self.stop = step == 8  # step 2 of epoch 2

    rec = StopAfter()
    with pytest.raises(TrainingCancelled):
        train(
            model_dir=tiny_dir,
            train_examples=data,
            eval_examples=MEMO,
            config=config,
            output_dir=tmp_path / "run",
            callbacks=rec,
        )
    assert [s for s, _ in rec.mid_epoch] == [1, 2, 3, 4, 5, 7, 8] and [e for e, _ in rec.checkpoints] == [1]
    # only the newest mid-epoch checkpoint is kept on disk (epoch ends are kept)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch-1", "step-8"]
    interrupted = _step_losses(rec.metric_log)
    assert max(interrupted) == 8

    resumed_rec = Recorder()
    resumed = train(
        model_dir=tiny_dir,
        train_examples=data,
        eval_examples=MEMO,
        config=config,
        output_dir=tmp_path / "run",
        callbacks=resumed_rec,
        resume_from=tmp_path / "run" / "checkpoints" / "step-8",
    )
    assert resumed_rec.metric_log[0]["current_steps"] == 9
    assert any(m.startswith("Resumed from step 8") for _, m, _ in resumed_rec.events)
    expected = _step_losses(straight.history)
    got = {**interrupted, **_step_losses(resumed_rec.metric_log)}
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4, abs=1e-6), step
    assert resumed.steps == straight.steps and resumed.trained_tokens == straight.trained_tokens
    assert resumed.final_eval_loss == pytest.approx(straight.final_eval_loss, rel=1e-4)


def test_a_pause_saves_the_step_it_reached_and_resumes_from_it_step_for_step(tiny_dir, tmp_path):
    """A stop that asks for a checkpoint (a pause) saves the step reached, between two steps, with no time-based
    checkpoint configured; resumed from it, the run is the uninterrupted one. A cancel saves nothing."""
    config = _fast(n_epochs=2, metrics_interval=0.0, checkpoint_interval=None, lora_dropout=0.1)
    data = MEMO * 3  # 12 examples, batch 2: 6 steps an epoch
    # the first train() of the process when this test runs alone: it must not differ from the later ones
    straight = train(
        model_dir=tiny_dir, train_examples=data, eval_examples=MEMO, config=config, output_dir=tmp_path / "straight"
    )

    class PauseAt(Recorder):
        def __init__(self, step, pause):
            super().__init__()
            self.at, self.pause = step, pause

        def metrics(self, data):
            super().metrics(data)
            self.stop = self.stop or data["current_steps"] == self.at

        def checkpoint_before_stop(self):
            return self.pause

    cancelled = PauseAt(3, pause=False)
    with pytest.raises(TrainingCancelled):
        train(
            model_dir=tiny_dir,
            train_examples=data,
            eval_examples=MEMO,
            config=config,
            output_dir=tmp_path / "cancelled",
            callbacks=cancelled,
        )
    assert cancelled.mid_epoch == [] and not (tmp_path / "cancelled" / "checkpoints").exists()

    paused = PauseAt(9, pause=True)  # step 3 of epoch 2
    with pytest.raises(TrainingCancelled):
        train(
            model_dir=tiny_dir,
            train_examples=data,
            eval_examples=MEMO,
            config=config,
            output_dir=tmp_path / "run",
            callbacks=paused,
        )
    assert [s for s, _ in paused.mid_epoch] == [9] and [e for e, _ in paused.checkpoints] == [1]
    resumed_rec = Recorder()
    resumed = train(
        model_dir=tiny_dir,
        train_examples=data,
        eval_examples=MEMO,
        config=config,
        output_dir=tmp_path / "run",
        callbacks=resumed_rec,
        resume_from=tmp_path / "run" / "checkpoints" / "step-9",
    )
    assert resumed_rec.metric_log[0]["current_steps"] == 10
    expected = _step_losses(straight.history)
    got = {**_step_losses(paused.metric_log), **_step_losses(resumed_rec.metric_log)}
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4, abs=1e-6), step
    assert resumed.final_eval_loss == pytest.approx(straight.final_eval_loss, rel=1e-4)


def test_a_checkpoint_that_cannot_be_read_fails_the_resume(tiny_dir, tmp_path):
    broken = tmp_path / "checkpoints" / "step-3"
    broken.mkdir(parents=True)
    (broken / engine.STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(engine.CheckpointError, match="cannot be read"):
        train(
            model_dir=tiny_dir,
            train_examples=MEMO,
            eval_examples=None,
            config=_fast(),
            output_dir=tmp_path,
            resume_from=broken,
        )


def test_bad_example_names_its_line(tiny_dir, tmp_path):
    examples = [*MEMO, {"messages": [{"role": "user", "content": "only a question"}]}]
    with pytest.raises(TrainingDataError, match=r"example 5 \(line 5\).*no assistant turn"):
        train(model_dir=tiny_dir, train_examples=examples, eval_examples=None, config=_fast(), output_dir=tmp_path)


def test_truncation_warns_once(tiny_dir, tmp_path):
    rec = Recorder()
    long = chat("word " * 200, "short answer")
    train(
        model_dir=tiny_dir,
        train_examples=[*MEMO, long, long],
        eval_examples=None,
        config=_fast(n_epochs=1, max_seq_len=128),
        output_dir=tmp_path,
        callbacks=rec,
    )
    warnings = [(m, d) for level, m, d in rec.events if level == "warning"]
    assert len(warnings) == 2  # truncated, and skipped (the answer was cut off)
    assert warnings[0][1]["truncated"] == 2


def test_metrics_rate_limited(tiny_dir, tmp_path):
    rec = Recorder()
    train(
        model_dir=tiny_dir,
        train_examples=MEMO * 16,
        eval_examples=MEMO,
        config=_fast(n_epochs=2, batch_size=1, metrics_interval=0.5),
        output_dir=tmp_path,
        callbacks=rec,
    )
    # 128 steps but far fewer reports: at most one per interval, plus one at each epoch end
    assert len(rec.metric_log) < 128
    mid = [t for t, m in zip(rec.metric_times, rec.metric_log, strict=True) if m["eval_loss"] is None]
    assert all(b - a >= 0.45 for a, b in zip(mid, mid[1:], strict=False))
    assert [m["epoch"] for m in rec.metric_log if m["eval_loss"] is not None] == [1.0, 2.0]
    for m in rec.metric_log:
        assert {
            "epoch",
            "current_steps",
            "total_steps",
            "elapsed_time",
            "remaining_time",
            "trained_tokens",
            "loss",
            "eval_loss",
            "learning_rate",
            "tokens_per_second",
        } <= m.keys()


def test_split_examples():
    train_part, eval_part = split_examples(list(range(50)), fraction=0.1, seed=3)
    assert len(eval_part) == 5 and sorted(train_part + eval_part) == list(range(50))
    assert split_examples(list(range(50)), fraction=0.1, seed=3) == (train_part, eval_part)


def test_fused_rope_matches_reference():
    from transformers.models.llama.modeling_llama import rotate_half

    from jobs.training.fused_rope import apply_rotary_pos_emb

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 7, 8, generator=gen, requires_grad=True)
    k = torch.randn(1, 2, 7, 8, generator=gen, requires_grad=True)
    cos, sin = torch.randn(1, 7, 8, generator=gen), torch.randn(1, 7, 8, generator=gen)
    weights = torch.randn(1, 4, 7, 8, generator=gen), torch.randn(1, 2, 7, 8, generator=gen)
    ours = apply_rotary_pos_emb(q, k, cos, sin)
    (ours[0] * weights[0]).sum().add((ours[1] * weights[1]).sum()).backward()
    got = q.grad.clone(), k.grad.clone()
    q.grad = k.grad = None
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    ref = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
    (ref[0] * weights[0]).sum().add((ref[1] * weights[1]).sum()).backward()
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])
    torch.testing.assert_close(got[0], q.grad)
    torch.testing.assert_close(got[1], k.grad)


def test_kernel_caches_are_bounded_so_new_packed_lengths_do_not_grow_memory():
    """ideep caches a oneDNN computation for every new input shape (1,024 by default) and a packed micro-batch
    has a new token count almost every pass: a training worker bounds the cache (jobs/training/memory.py).
    In a fresh process each (the cache reads its size once), 400 row counts through the frozen linear."""
    import subprocess
    import sys

    from jobs.training.memory import KERNEL_CACHE_VARIABLES

    script = """
import ctypes, sys
if sys.argv[1] == "bounded":
    from jobs.training.memory import bound_native_caches
    bound_native_caches()
import torch
from jobs.training import fast_linear
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
def in_use():
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd
if not fast_linear.available():
    print("unavailable"); sys.exit()
weight = torch.randn(256, 128)
fast_linear.frozen_linear(torch.randn(5, 128), weight)
before = in_use()
for rows in range(10, 410):
    fast_linear.frozen_linear(torch.randn(rows, 128), weight)
print((in_use() - before) / 2**20)
"""
    grown = {}
    for mode in ("bounded", "default"):
        env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}
        out = subprocess.run(
            [sys.executable, "-c", script, mode],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        if out.stdout.strip() == "unavailable":
            pytest.skip("this torch build has no oneDNN linear")
        grown[mode] = float(out.stdout.split()[-1])
    # measured: 5.5 MB bounded, 221 MB with the default cache
    assert grown["bounded"] < 30 < 100 < grown["default"], grown


def test_frozen_linear_matches_f_linear():
    from jobs.training.fast_linear import frozen_linear

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 40, generator=gen)
    bias = torch.randn(48, generator=gen)
    x = torch.randn(2, 5, 40, generator=gen, requires_grad=True)
    upstream = torch.randn(2, 5, 48, generator=gen)
    (frozen_linear(x, weight, bias) * upstream).sum().backward()
    got = x.grad.clone()
    x.grad = None
    expected = torch.nn.functional.linear(x, weight, bias)
    (expected * upstream).sum().backward()
    torch.testing.assert_close(frozen_linear(x.detach(), weight, bias), expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, x.grad, rtol=1e-5, atol=1e-5)


def test_fused_head_matches_plain(monkeypatch):
    """Log-probs and their gradient through the frozen head without keeping the logits: the same numbers
    as cross-entropy on the logits, across chunk boundaries and with a per-token upstream gradient (DPO)."""
    from jobs.training import fused_head

    monkeypatch.setattr(fused_head, "CHUNK_TOKENS", 4)  # 10 rows: three chunks, the last one short
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(50, 16, generator=gen), torch.randn(50, generator=gen)
    hidden = torch.randn(10, 16, generator=gen, requires_grad=True)
    target = torch.randint(0, 50, (10,), generator=gen)
    upstream = torch.randn(10, generator=gen)
    assert fused_head.usable(weight, bias) and not fused_head.usable(weight.requires_grad_(True), None)
    weight.requires_grad_(False)

    got = fused_head.frozen_head_logps(hidden, weight, bias, target)
    (got * upstream).sum().backward()
    got_grad, hidden.grad = hidden.grad.clone(), None
    expected = -torch.nn.functional.cross_entropy(hidden @ weight.t() + bias, target, reduction="none")
    (expected * upstream).sum().backward()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, hidden.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # evaluation: no gradient is computed or kept
        torch.testing.assert_close(
            fused_head.frozen_head_logps(hidden, weight, bias, target), expected.detach(), rtol=1e-5, atol=1e-5
        )


# ------------------------------------------------------------------ precision, recomputation, memory budget


def _first_step_loss(tiny_dir, tmp_path, **kwargs) -> float:
    config = _fast(n_epochs=1, metrics_interval=0.0, **kwargs)
    result = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=MEMO,
        config=config,
        output_dir=tmp_path / str(len(list(tmp_path.iterdir()))),
    )
    return result.history[0]["loss"], result.final_eval_loss


def test_bf16_autocast_and_checkpointing_give_the_same_loss(tiny_dir, tmp_path):
    """The GPU path's switches, run on CPU: bf16 autocast and gradient checkpointing change how the
    loss is computed, not what it is."""
    for training_type in ("lora", "full"):
        plain, plain_eval = _first_step_loss(
            tiny_dir, tmp_path, training_type=training_type, precision="fp32", gradient_checkpointing=False
        )
        recomputed, recomputed_eval = _first_step_loss(
            tiny_dir, tmp_path, training_type=training_type, precision="fp32", gradient_checkpointing=True
        )
        assert recomputed == pytest.approx(plain, rel=1e-5) and recomputed_eval == pytest.approx(plain_eval, rel=1e-4)
        bf16, bf16_eval = _first_step_loss(tiny_dir, tmp_path, training_type=training_type, precision="bf16")
        assert bf16 == pytest.approx(plain, rel=2e-2) and bf16_eval == pytest.approx(plain_eval, rel=3e-2)


def test_memory_plan_is_announced(tiny_dir, tmp_path):
    rec = Recorder()
    train(
        model_dir=tiny_dir,
        train_examples=MEMO,
        eval_examples=None,
        config=_fast(n_epochs=1, precision="bf16"),
        output_dir=tmp_path,
        callbacks=rec,
    )
    plan = next(d for _, m, d in rec.events if m.startswith("Memory plan"))
    assert plan["bf16"] is True and plan["micro_batch_tokens"] > 0 and plan["fits"] is True


def test_bf16_is_the_default_on_a_cpu_with_fast_bf16(tiny_dir, tmp_path, monkeypatch):
    """precision="auto" trains in bf16 on a CPU with AMX or AVX512-BF16 (frozen LoRA weights bf16, adapters and
    optimizer fp32, attention in fp32, packed rows in steps of 64), in fp32 on one without; the events say which,
    and why."""
    monkeypatch.setattr(engine, "bf16_isa", lambda: None)
    assert not engine.use_bf16(TrainingConfig(), "cpu") and engine.pad_multiple_for("cpu", False) == 1
    fp32 = Recorder()
    plain = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=MEMO,
        config=_fast(n_epochs=2, precision="auto"),
        output_dir=tmp_path / "fp32",
        callbacks=fp32,
    )
    assert "Precision: fp32 (this device has no fast bf16)" in [m for _, m, _ in fp32.events]

    monkeypatch.setattr(engine, "bf16_isa", lambda: "AVX512-BF16")
    config = _fast(n_epochs=2, precision="auto")
    assert engine.use_bf16(config, "cpu") and engine.pad_multiple_for("cpu", True) == 64
    assert not engine.use_bf16(_fast(precision="fp32"), "cpu")
    model = engine.load_model(tiny_dir, config)
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    bf16 = Recorder()
    result = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=MEMO,
        config=config,
        output_dir=tmp_path / "bf16",
        callbacks=bf16,
    )
    event = next((m, d) for _, m, d in bf16.events if m.startswith("Precision"))
    assert event == (
        "Precision: bf16 compute (this CPU has AVX512-BF16); bf16 frozen weights, fp32 trainable weights "
        "and optimizer state",
        {"precision": "bf16", "asked": "auto"},
    )
    # the same run, a little less exact: every loss within a few percent of fp32's, and it learned as much
    for ours, theirs in zip(result.history, plain.history, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=5e-2)
    assert result.final_eval_loss == pytest.approx(plain.final_eval_loss, rel=5e-2)
    assert result.final_eval_loss < result.history[0]["loss"]


def test_a_cpu_bf16_run_attends_in_fp32(monkeypatch):
    """The CPU's bf16 attention backward is slow on short examples: segmented attention computes them in fp32 and
    hands back bf16."""
    from jobs.training.packing import FP32_ATTENTION_UP_TO, segmented_sdpa_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 10, 8) for _ in range(3))
    segments = [[(0, 4), (4, 10)]]
    expected, _ = segmented_sdpa_forward(None, q, k, v, None, segments=segments)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = segmented_sdpa_forward(None, q.bfloat16(), k.bfloat16(), v.bfloat16(), None, segments=segments)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)
    # a long example: bf16 attention there (the faster one at that length); same answer, less exact
    long_segments = [[(0, 4), (4, FP32_ATTENTION_UP_TO + 8)]]
    q, k, v = (torch.randn(1, 4, FP32_ATTENTION_UP_TO + 8, 8) for _ in range(3))
    expected, _ = segmented_sdpa_forward(None, q, k, v, None, segments=long_segments)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda q, *a, **kw: calls.append(q.dtype) or sdpa(q, *a, **kw),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = segmented_sdpa_forward(None, q.bfloat16(), k.bfloat16(), v.bfloat16(), None, segments=long_segments)
    assert calls == [torch.bfloat16, torch.bfloat16]
    torch.testing.assert_close(got.float(), expected, rtol=5e-2, atol=5e-2)


def test_micro_batch_budget_from_free_memory():
    from jobs.training.budget import ModelShape, activation_bytes_per_token, plan_micro_batches

    smollm = ModelShape(layers=30, hidden=576, intermediate=1536, vocab=49152)
    per_token = activation_bytes_per_token(smollm)
    assert 0.8 * 2**20 < per_token < 1.5 * 2**20  # measured about 1 MB a token in fp32
    assert activation_bytes_per_token(smollm, dtype_bytes=2) < per_token
    assert activation_bytes_per_token(smollm, checkpointing=True) < per_token / 3

    plan = plan_micro_batches(free_bytes=256 * 2**20, shape=smollm, longest_sequence=200)
    assert plan.micro_batch_tokens == 256 * 2**20 // per_token and not plan.gradient_checkpointing and plan.fits
    assert plan_micro_batches(free_bytes=10**12, shape=smollm, longest_sequence=200).micro_batch_tokens == 16384

    # the longest sequence does not fit with every activation kept: recompute
    glm9b = ModelShape(layers=40, hidden=4096, intermediate=13696, vocab=151552)
    plan = plan_micro_batches(free_bytes=60 * 2**30, shape=glm9b, longest_sequence=32768, dtype_bytes=2)
    assert plan.gradient_checkpointing and plan.fits and plan.micro_batch_tokens >= 32768
    # not even recomputed: it does not fit, and says so
    plan = plan_micro_batches(free_bytes=2**30, shape=glm9b, longest_sequence=131072, dtype_bytes=2)
    assert not plan.fits and plan.gradient_checkpointing
    assert plan_micro_batches(free_bytes=-5, shape=smollm, longest_sequence=10).fits is False


def test_a_step_goes_in_the_fewest_micro_batches_of_about_equal_size():
    from jobs.training.budget import ModelShape, plan_micro_batches

    smollm = ModelShape(layers=30, hidden=576, intermediate=1536, vocab=49152)
    # LoRA (a frozen head, the fused head keeps no logits): the CPU's default 256 MB holds a typical step of
    # 8 short chat examples in two micro-batches, where counting logits made it three (a third slower)
    plan = plan_micro_batches(free_bytes=256 * 2**20, shape=smollm, longest_sequence=82, fused_head=True)
    assert plan.micro_batch_tokens >= 280
    lengths = [62, 60, 70, 55, 64, 58, 61, 64]
    units = [[(list(range(n)), [True] * n)] for n in lengths]

    def sizes(mbs):
        return [sum(lengths[u] for u in mb.units) for mb in mbs]

    mbs = build_micro_batches(units, list(range(8)), plan.micro_batch_tokens, True, 2)
    assert [u for mb in mbs for u in mb.units] == list(range(8))
    assert len(mbs) == 2 and max(sizes(mbs)) - min(sizes(mbs)) <= 70
    # a budget that holds most of the step: two halves, not the budget's worth and a small tail (426 + 68)
    halves = sizes(build_micro_batches(units, list(range(8)), 426, True, 2))
    assert len(halves) == 2 and max(halves) <= 260
    # one unit longer than the budget still gets a micro-batch of its own; padded batches stay greedy
    assert len(build_micro_batches(units, list(range(8)), 50, True, 2)) == 8
    assert sizes(build_micro_batches(units, list(range(8)), 426, False, 2))[0] > 260


# ------------------------------------------------------------------ varlen attention (the CUDA path)


def test_attention_kernel_choice():
    from jobs.training.packing import choose_attention

    def pick(device, bf16, flash_attn, torch_varlen):
        return choose_attention(device=device, bf16=bf16, flash_attn=flash_attn, torch_varlen=torch_varlen)

    assert pick("cuda", True, True, True) == "flash_attention_2"
    assert pick("cuda:1", True, False, True) == "torch_varlen"
    assert pick("cuda", True, False, False) == "segmented_sdpa"
    assert pick("cuda", False, True, True) == "segmented_sdpa"  # fp32: flash kernels have none
    assert pick("cpu", True, True, True) == "segmented_sdpa"
    assert engine.attention_for(TrainingConfig(), "cpu") == "segmented_sdpa"  # this machine's path is unchanged


def _packed(renderer, n=4):
    units = [[(e.input_ids, e.loss_mask)] for e in map(renderer.encode_sft, MEMO[:n])]
    return units, build_micro_batches(units, list(range(n)), 4096, True, 2)[0]


def test_cu_seqlens_are_transformers_packed_offsets(renderer):
    """The offsets handed to the varlen kernels are the ones transformers derives from packed position ids."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    units, mb = _packed(renderer)
    (cu, _), (longest, _) = prepare_fa_kwargs_from_position_ids(mb.position_ids)
    assert mb.cu_seqlens.tolist() == cu.tolist() and mb.max_seqlen == int(longest)
    assert mb.cu_seqlens.dtype == torch.int32 and mb.cu_seqlens.tolist()[-1] == mb.n_tokens
    # unpacked rows: one slice a row, padding included, offsets into the flattened rows
    padded = build_micro_batches(units, [0, 1], 4096, False, 2)[0]
    width = padded.input_ids.shape[1]
    assert padded.cu_seqlens.tolist() == [0, width, 2 * width] and padded.max_seqlen == width


def test_transformers_packed_position_ids_path_matches_the_segment_loop(tiny_dir, renderer):
    """transformers' own packed-sequence path (position ids restarting per example, SDPA with the
    block-diagonal mask it derives) gives the per-segment loop's log-probs: our micro-batches follow its contract."""
    from transformers import AutoModelForCausalLM

    _units, mb = _packed(renderer)
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32, attn_implementation="sdpa")
    ours = AutoModelForCausalLM.from_pretrained(
        str(tiny_dir), dtype=torch.float32, attn_implementation=register_attention()
    )
    with torch.no_grad():
        # without a cache: transformers looks for packed position ids only then (a training forward)
        hidden = plain.model(input_ids=mb.input_ids, position_ids=mb.position_ids, use_cache=False)
        hidden = hidden.last_hidden_state
        logits = plain.lm_head(hidden.reshape(-1, hidden.shape[-1])[mb.src])
        expected = -torch.nn.functional.cross_entropy(logits, mb.tgt, reduction="none")
        got = engine.token_logps(ours, mb)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """torch's varlen_attn contract ((tokens, heads, dim), causal for window (-1, 0)) computed with SDPA per
    slice: the CUDA kernel has no CPU build, this checks everything our glue does around it."""
    assert window_size == (-1, 0) and max_q == max_k and cu_q is cu_k
    bounds = cu_q.tolist()
    assert max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) == max_q
    parts = [
        torch.nn.functional.scaled_dot_product_attention(
            q[a:b].transpose(0, 1),
            k[a:b].transpose(0, 1),
            v[a:b].transpose(0, 1),
            is_causal=True,
            scale=scale,
            enable_gqa=enable_gqa,
        ).transpose(0, 1)
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    return torch.cat(parts)


def test_torch_varlen_attention_matches_the_segment_loop(tiny_dir, renderer, monkeypatch):
    """The varlen path (one kernel call over the packed row, bf16 inputs, GQA) gives the loop's log-probs."""
    from transformers import AutoModelForCausalLM

    from jobs.training import packing

    monkeypatch.setattr(packing, "varlen_kernel", lambda: _reference_varlen)
    _units, mb = _packed(renderer)
    loop = AutoModelForCausalLM.from_pretrained(
        str(tiny_dir), dtype=torch.float32, attn_implementation=register_attention()
    )
    varlen = AutoModelForCausalLM.from_pretrained(
        str(tiny_dir), dtype=torch.float32, attn_implementation=register_attention("torch_varlen")
    )
    with torch.no_grad():
        expected = engine.token_logps(loop, mb)
        got = engine.token_logps(varlen, mb)
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)  # the kernel's inputs are bf16
    assert not torch.equal(got, expected)  # it did run the varlen path


# ------------------------------------------------------------------ the memory estimate (create form, refusal)


def test_model_shape_counts_the_real_models_parameters(tiny_dir):
    """The shape read from config.json counts the parameters and LoRA's adapter that the engine really builds."""
    from jobs.training.budget import ModelShape

    shape = ModelShape.from_dict(json.loads((tiny_dir / "config.json").read_text()))
    model = engine.load_model(tiny_dir, TrainingConfig(lora_r=16, lora_target="all-linear"))
    base = model.get_base_model()
    norms = sum(p.numel() for n, p in base.named_parameters() if "norm" in n)
    assert shape.parameters() == sum(p.numel() for p in base.parameters()) - norms - sum(
        p.numel() for n, p in base.named_parameters() if "lora_" in n
    )
    assert shape.lora_parameters(16) == sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)


def test_training_memory_estimate_by_part():
    from jobs.training.budget import RUNTIME_BYTES, ModelShape, activation_bytes_per_token, estimate_training_memory

    smollm = ModelShape(layers=30, hidden=576, intermediate=1536, vocab=49152, kv_hidden=192, heads=9)
    params = 134_515_008
    node = 16 * 2**30
    lora = estimate_training_memory(
        shape=smollm, training_type="lora", bf16=False, longest_sequence=500, available=node, parameters=params
    )
    adapter = smollm.lora_parameters(16)
    assert lora.weights == 4 * params + 4 * adapter and lora.gradients == 4 * adapter and lora.optimizer == 8 * adapter
    per_token = activation_bytes_per_token(smollm)
    assert lora.activations == 500 * per_token and not lora.gradient_checkpointing
    assert lora.total == lora.weights + lora.gradients + lora.optimizer + lora.activations + RUNTIME_BYTES
    assert lora.fits and 1.4 * 2**30 < lora.total < 2.0 * 2**30
    # measured peak RSS (MB) of these runs, by longest sequence: one example a micro-batch, and the CPU's default
    # plan (256 MB of activations; tests/perf/bench_memory_estimate.py)
    measured = {
        (57, None): 1170,
        (253, None): 1248,
        (1021, None): 1781,
        (57, 256): 1328,
        (253, 256): 1427,
        (1021, 256): 1757,
    }
    for (tokens, budget_mb), peak_mb in measured.items():
        total = estimate_training_memory(
            shape=smollm,
            training_type="lora",
            bf16=False,
            longest_sequence=tokens,
            available=node,
            activation_budget=budget_mb and budget_mb * 2**20,
        ).total
        assert peak_mb <= total / 2**20 <= 1.5 * peak_mb  # honest: never short, at most half again
    # a CPU run fills its activation budget with micro-batches: the estimate counts the budget, not one example;
    # a sequence the budget cannot hold whole is recomputed (as the engine's plan decides)
    budget = 256 * 2**20
    short = estimate_training_memory(
        shape=smollm,
        training_type="lora",
        bf16=False,
        longest_sequence=60,
        available=node,
        parameters=params,
        activation_budget=budget,
    )
    assert short.activations == (budget // per_token) * per_token and not short.gradient_checkpointing
    assert budget - per_token < short.activations <= budget
    longer = estimate_training_memory(
        shape=smollm,
        training_type="lora",
        bf16=False,
        longest_sequence=500,
        available=node,
        parameters=params,
        activation_budget=budget,
    )
    assert longer.gradient_checkpointing and longer.activations <= budget
    assert longer.activations >= 500 * activation_bytes_per_token(smollm, checkpointing=True)
    bf16 = estimate_training_memory(
        shape=smollm, training_type="lora", bf16=True, longest_sequence=500, available=node, parameters=params
    )
    assert bf16.weights == 2 * params + 4 * adapter and bf16.activations < lora.activations
    full = estimate_training_memory(
        shape=smollm, training_type="full", bf16=True, longest_sequence=500, available=node, parameters=params
    )
    # fp32 master weights, fp32 gradients and two fp32 moments: 16 bytes a parameter, bf16 or not
    assert (full.weights, full.gradients, full.optimizer) == (4 * params, 4 * params, 8 * params)

    # a 9B model, full, 32k tokens on an 80 GB GPU: does not fit, even recomputed
    glm9b = ModelShape(layers=40, hidden=4096, intermediate=13696, vocab=151552, kv_hidden=256)
    big = estimate_training_memory(
        shape=glm9b,
        training_type="full",
        bf16=True,
        longest_sequence=32768,
        available=80 * 2**30,
        parameters=9_400_000_000,
    )
    assert not big.fits and big.gradient_checkpointing and big.total > 150 * 2**30
    # LoRA of it fits, with the activations recomputed because all of them kept would not
    small = estimate_training_memory(
        shape=glm9b,
        training_type="lora",
        bf16=True,
        longest_sequence=32768,
        available=80 * 2**30,
        parameters=9_400_000_000,
    )
    assert small.fits and small.gradient_checkpointing
    assert small.activations == 32768 * activation_bytes_per_token(glm9b, dtype_bytes=2, checkpointing=True)


# ------------------------------------------------------------------ several GPUs: the accelerate path


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_the_accelerate_path_trains_as_the_plain_one(tiny_dir, tmp_path, method):
    """Through accelerate (one process here, on the CPU): each step's share, the step-wide loss
    normalisation and the main-process reporting give the plain run's losses."""
    examples = (
        MEMO * 2
        if method == "sft"
        else [
            {
                "input": {"messages": [{"role": "user", "content": f"Colour {i}?"}]},
                "preferred_output": [{"role": "assistant", "content": word}],
                "non_preferred_output": [{"role": "assistant", "content": "no idea"}],
            }
            for i, word in enumerate(["red", "blue", "green", "gold"])
        ]
    )
    results = {}
    for distributed in (False, True):
        rec = Recorder()
        results[distributed] = train(
            model_dir=tiny_dir,
            train_examples=examples,
            eval_examples=examples[:2],
            config=_fast(
                method=method,
                n_epochs=2,
                metrics_interval=0.0,
                distributed=distributed,
                learning_rate=1e-3 if method == "dpo" else 1e-2,
            ),
            output_dir=tmp_path / str(distributed),
            callbacks=rec,
        )
        assert rec.checkpoints and any(m == "Training finished" for _, m, _ in rec.events)
    plain, accelerated = results[False], results[True]
    assert [h["loss"] for h in accelerated.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-5)
    assert accelerated.final_eval_loss == pytest.approx(plain.final_eval_loss, rel=1e-5)
    assert accelerated.trained_tokens == plain.trained_tokens
    assert (accelerated.output_dir / "adapter_config.json").exists()


def _two_processes(tmp_path, tiny_dir, name: str, config: dict, **extra) -> list[dict]:
    """Run the multi-GPU command with two real processes (accelerate's MULTI_CPU, gloo); its event records."""
    import os
    import subprocess
    import sys

    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(e) + "\n" for e in MEMO * 2))
    spec = {
        "model_dir": str(tiny_dir),
        "train_file": str(train_file),
        "output_dir": str(tmp_path / name),
        "events": str(tmp_path / f"{name}.jsonl"),
        "stop": str(tmp_path / f"{name}.stop"),
        "config": config,
        **extra,
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "jobs.training.distributed",
            str(tmp_path / f"{name}.json"),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.timeout(240)
def test_two_processes_through_accelerate_train_as_one(tiny_dir, tmp_path):
    """LoRA's multi-GPU path with two real processes: each takes half of every step and DDP averages the
    gradients; the losses are the single process's."""
    config = {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.0,
        "num_threads": 1,
        "metrics_interval": 0.0,
        "precision": "fp32",
    }
    records = _two_processes(tmp_path, tiny_dir, "out", config)
    losses = [r["data"]["loss"] for r in records if r["type"] == "metrics"]
    result = next(r["data"] for r in records if r["type"] == "result")
    assert len(losses) == 4  # the main process reports, once
    plain = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=None,
        config=TrainingConfig(**config),
        output_dir=tmp_path / "plain",
    )
    assert losses == pytest.approx([h["loss"] for h in plain.history], rel=1e-5)
    assert result["trained_tokens"] == plain.trained_tokens
    assert (tmp_path / "out" / "final" / "adapter_config.json").exists()


@pytest.mark.timeout(400)
def test_full_fine_tuning_on_two_processes_is_sharded_and_trains_as_one(tiny_dir, tmp_path):
    """Full fine-tuning's multi-GPU path, FSDP2 with two real processes (gloo on a CPU): the losses are the
    single process's; its checkpoints are gathered in the single-process layout, so a run resumes from
    one on one process, and a sharded run resumes from a single process's, each continuing exactly."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = {
        "training_type": "full",
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "num_threads": 1,
        "metrics_interval": 0.0,
        "checkpoint_interval": 0,
        "precision": "fp32",
    }
    records = _two_processes(tmp_path, tiny_dir, "sharded", config)
    events = [r["message"] for r in records if r["type"] == "event"]
    assert any("sharded" in m for m in events), events
    losses = [r["data"]["loss"] for r in records if r["type"] == "metrics"]
    plain = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=None,
        config=TrainingConfig(**config),
        output_dir=tmp_path / "plain",
    )
    assert len(losses) == 4 and losses == pytest.approx([h["loss"] for h in plain.history], rel=1e-4)
    # the gathered checkpoint holds every trained weight, whole, as the single process's does
    sharded_ckpt = load_file(str(tmp_path / "sharded" / "checkpoints" / "epoch-1" / "trainable.safetensors"))
    plain_ckpt = load_file(str(tmp_path / "plain" / "checkpoints" / "epoch-1" / "trainable.safetensors"))
    assert sharded_ckpt.keys() == plain_ckpt.keys()
    assert all(sharded_ckpt[k].shape == plain_ckpt[k].shape for k in plain_ckpt)
    # the final model is whole and loads anywhere
    final = AutoModelForCausalLM.from_pretrained(str(tmp_path / "sharded" / "final"))
    reference = AutoModelForCausalLM.from_pretrained(str(tmp_path / "plain" / "final"))
    for (name, a), (_, b) in zip(final.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=2e-2), name

    # one process resumes from the sharded run's epoch-1 checkpoint: epoch 2 is the uninterrupted run's
    resumed = train(
        model_dir=tiny_dir,
        train_examples=MEMO * 2,
        eval_examples=None,
        config=TrainingConfig(**config),
        output_dir=tmp_path / "resumed",
        resume_from=tmp_path / "sharded" / "checkpoints" / "epoch-1",
    )
    assert [h["loss"] for h in resumed.history][2:] == pytest.approx([h["loss"] for h in plain.history][2:], rel=1e-4)
    # and two processes resume from the single process's epoch-1 checkpoint
    records = _two_processes(
        tmp_path, tiny_dir, "reshard", config, resume_from=str(tmp_path / "plain" / "checkpoints" / "epoch-1")
    )
    losses = [r["data"]["loss"] for r in records if r["type"] == "metrics"]
    assert losses == pytest.approx([h["loss"] for h in plain.history][2:], rel=1e-4)  # epoch 2, resumed


def test_the_sharding_unit_is_the_decoder_layer_and_bf16_keeps_fp32_masters(tiny_dir):
    from jobs.training.distributed import decoder_layers, mixed_precision
    from jobs.training.engine import TokenLogps, load_model

    model = load_model(tiny_dir, _fast(training_type="full"))
    layers = decoder_layers(TokenLogps(model))
    assert len(layers) == model.config.num_hidden_layers
    assert {type(layer).__name__ for layer in layers} == set(model._no_split_modules)
    on_gpu, on_cpu = mixed_precision(bf16=True), mixed_precision(bf16=False)
    assert (on_gpu.param_dtype, on_gpu.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert on_cpu.param_dtype is None and on_cpu.reduce_dtype is None  # fp32 throughout
