"""TrainingConfig refuses a value the engine cannot train with, naming the field and what it may be."""

from __future__ import annotations

import pytest

from jobs.training.config import RULES, TrainingConfig, TrainingConfigError


def test_the_defaults_and_the_runners_values_are_valid():
    TrainingConfig()
    TrainingConfig(
        method="dpo",
        training_type="full",
        n_epochs=50,
        batch_size=256,
        learning_rate=2e-3,
        max_seq_len=256,
        seed=0,
        dpo_beta=2.0,
        checkpoint_interval=0.02 * 60,
        activation_memory_mb=1,
        precision="fp32",
        lora_target=["q_proj", "v_proj"],
        micro_batch_tokens=64,
        num_threads=1,
        gradient_checkpointing=True,
        distributed=False,
        device="cpu",
    )
    TrainingConfig(checkpoint_interval=None, micro_batch_tokens=None, gradient_checkpointing=None, lora_alpha=0.5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "ppo", "TrainingConfig.method must be 'sft' or 'dpo', not 'ppo'"),
        ("training_type", "qlora", "TrainingConfig.training_type must be 'lora' or 'full', not 'qlora'"),
        ("n_epochs", 0, "TrainingConfig.n_epochs must be an integer, 1 <= value, not 0"),
        ("n_epochs", 2.0, "TrainingConfig.n_epochs must be an integer, 1 <= value, not 2.0"),
        ("batch_size", True, "TrainingConfig.batch_size must be an integer, 1 <= value, not True"),
        ("learning_rate", 0.0, "TrainingConfig.learning_rate must be a number, 0 < value <= 1, not 0.0"),
        ("learning_rate", float("nan"), "TrainingConfig.learning_rate must be a number, 0 < value <= 1, not nan"),
        ("learning_rate", 3, "TrainingConfig.learning_rate must be a number, 0 < value <= 1, not 3"),
        ("max_seq_len", 1, "TrainingConfig.max_seq_len must be an integer, 2 <= value, not 1"),
        ("lora_r", 0, "TrainingConfig.lora_r must be an integer, 1 <= value (checked when training_type is 'lora')"),
        ("lora_alpha", -1, "TrainingConfig.lora_alpha must be a number, 0 < value (checked when training_type is"),
        ("lora_dropout", 1.0, "TrainingConfig.lora_dropout must be a number, 0 <= value < 1 (checked when"),
        ("lora_target", [], "TrainingConfig.lora_target must be a module name or a non-empty list of module names"),
        ("warmup_ratio", 1.5, "TrainingConfig.warmup_ratio must be a number, 0 <= value <= 1, not 1.5"),
        ("precision", "fp16", "TrainingConfig.precision must be 'auto' or 'fp32' or 'bf16', not 'fp16'"),
        ("num_threads", 0, "TrainingConfig.num_threads must be an integer, 1 <= value, or None, not 0"),
        ("micro_batch_tokens", -5, "TrainingConfig.micro_batch_tokens must be an integer, 1 <= value, or None"),
        ("max_grad_norm", -1.0, "TrainingConfig.max_grad_norm must be a number, 0 <= value, not -1.0"),
        ("checkpoint_interval", -1, "TrainingConfig.checkpoint_interval must be a number, 0 <= value, or None"),
        ("packing", "yes", "TrainingConfig.packing must be True or False, not 'yes'"),
        ("device", "", "TrainingConfig.device must be a non-empty string, or None, not ''"),
    ],
)
def test_a_bad_value_is_refused_with_its_field_and_range(field, value, message):
    with pytest.raises(TrainingConfigError) as exc:
        TrainingConfig(**{field: value})
    assert str(exc.value).startswith(message)
    assert isinstance(exc.value, ValueError)  # what callers of the engine already catch


def test_beta_is_checked_for_dpo_only_and_lora_fields_for_lora_only():
    TrainingConfig(method="sft", dpo_beta=0.0)  # SFT ignores beta (the runner passes its default to every run)
    with pytest.raises(TrainingConfigError, match=r"dpo_beta must be a number, 0 < value \(checked when method"):
        TrainingConfig(method="dpo", dpo_beta=0.0)
    TrainingConfig(training_type="full", lora_r=0, lora_dropout=2.0)
    with pytest.raises(TrainingConfigError, match="lora_r"):
        TrainingConfig(training_type="lora", lora_r=0)


def test_a_field_changed_after_construction_is_checked_again():
    config = TrainingConfig()
    config.batch_size = 0
    with pytest.raises(TrainingConfigError, match="batch_size"):
        config.validate()


def test_every_field_has_a_rule():
    assert list(RULES) == [f for f in TrainingConfig.__dataclass_fields__]
