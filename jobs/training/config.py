"""What one training run is asked to do (:class:`TrainingConfig`), checked when it is made.

No torch here: the configuration is plain values, and a bad one is refused by its constructor
(:class:`TrainingConfigError`, a ``ValueError`` whose message names the field and what it may be) before
anything is loaded. One class serves SFT and DPO, LoRA and full fine-tuning: the fields of a method or a
training type that the run does not use (``dpo_beta`` for SFT, the ``lora_*`` fields for full
fine-tuning) keep their defaults' meaning and are not checked.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

METHODS = ("sft", "dpo")
TRAINING_TYPES = ("lora", "full")
PRECISIONS = ("auto", "fp32", "bf16")


class TrainingConfigError(ValueError):
    """A :class:`TrainingConfig` field has a value the engine cannot train with; the message names it."""


@dataclass
class TrainingConfig:
    method: str = "sft"  # "sft" | "dpo"
    training_type: str = "lora"  # "lora" | "full"
    n_epochs: int = 3
    batch_size: int = 8  # examples (DPO: pairs) per optimizer step
    learning_rate: float = 2e-4  # absolute LR
    max_seq_len: int = 2048  # the base model's context length; longer examples are truncated
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target: str | list[str] = "all-linear"
    dpo_beta: float = 0.1
    packing: bool = True
    seed: int = 42
    num_threads: int | None = None  # None: the machine's physical cores
    warmup_ratio: float = 0.03
    # beyond the agreed interface (all have safe defaults)
    # tokens per forward pass (padded size); a step is split beyond it. None: from the memory left for
    # activations (budget.plan_micro_batches): free device memory on a GPU, activation_memory_mb on a CPU
    micro_batch_tokens: int | None = None
    # CPU: memory for activations (the console sets TRAINING_CPU_ACTIVATION_MB); smaller trades speed for a
    # lower peak (figures per machine: docs/engine-notes.md)
    activation_memory_mb: int = 256
    # None: switched on when the longest sequence's activations do not fit (budget.plan_micro_batches)
    gradient_checkpointing: bool | None = None
    # "auto": bf16 autocast (and bf16 frozen weights for LoRA) on a GPU that supports bf16 and on a CPU with
    # AMX or AVX512-BF16 (console.cpus.bf16_isa), fp32 elsewhere; the "Precision" event says which one trained the task
    precision: str = "auto"  # "auto" | "fp32" | "bf16"
    max_grad_norm: float = 1.0  # 0: no clipping
    weight_decay: float = 0.0
    metrics_interval: float = 1.0  # seconds between metric reports, at least
    fused_lora: bool = True  # fused LoRA linear and RoPE forward/backward (same math, fewer ops)
    device: str | None = None  # None: CUDA when available, else CPU
    # seconds between mid-epoch checkpoints (besides one per epoch); 0 or None: per epoch only
    checkpoint_interval: float | None = 600.0
    # through accelerate, one process per GPU (distributed.py); None: when launched so (WORLD_SIZE > 1)
    distributed: bool | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TrainingConfigError` for the first field outside its range (see :data:`RULES`)."""
        for name in _FIELD_NAMES:
            rule = RULES[name]
            if rule.applies(self):
                rule.check(name, getattr(self, name))


# ----------------------------------------------------------------------------- the rules


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class _Rule:
    """What one field may be: ``kind`` "int", "number", "bool", "choice", "text" or "target"; a number's
    bounds (``low``/``high``, ``low_open``: the bound itself excluded); ``optional``: None is allowed;
    ``only``: (field, value) the rule applies under (for DPO only, for LoRA only)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    only: tuple[str, str] | None = None

    def applies(self, config: TrainingConfig) -> bool:
        return self.only is None or getattr(config, self.only[0]) == self.only[1]

    def allowed(self) -> str:
        """The allowed values in words, for the message."""
        if self.kind == "choice":
            text = " or ".join(repr(c) for c in self.choices)
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "text":
            text = "a non-empty string"
        elif self.kind == "target":
            text = "a module name or a non-empty list of module names"
        else:
            what = "an integer" if self.kind == "int" else "a number"
            low = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
            high = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
            text = f"{what}, {low}value{high}" if low or high else what
        if self.optional:
            text += ", or None"
        if self.only is not None:
            text += f" (checked when {self.only[0]} is {self.only[1]!r})"
        return text

    def ok(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str) and bool(value)
        if self.kind == "target":
            if isinstance(value, str):
                return bool(value)
            return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) and v for v in value)
        if not (_is_int(value) if self.kind == "int" else _is_number(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, name: str, value) -> None:
        if not self.ok(value):
            raise TrainingConfigError(f"TrainingConfig.{name} must be {self.allowed()}, not {value!r}")


_DPO = ("method", "dpo")
_LORA = ("training_type", "lora")

#: every field's rule, in the order of the fields (the first field that breaks its rule is the one reported)
RULES: dict[str, _Rule] = {
    "method": _Rule("choice", choices=METHODS),
    "training_type": _Rule("choice", choices=TRAINING_TYPES),
    "n_epochs": _Rule("int", low=1),
    "batch_size": _Rule("int", low=1),
    "learning_rate": _Rule("number", low=0, high=1, low_open=True),
    "max_seq_len": _Rule("int", low=2),  # the first token never has a label: a label needs two tokens
    "lora_r": _Rule("int", low=1, only=_LORA),
    "lora_alpha": _Rule("number", low=0, low_open=True, only=_LORA),
    "lora_dropout": _Rule("number", low=0, high=1, high_open=True, only=_LORA),
    "lora_target": _Rule("target", only=_LORA),
    "dpo_beta": _Rule("number", low=0, low_open=True, only=_DPO),
    "packing": _Rule("bool"),
    "seed": _Rule("int"),
    "num_threads": _Rule("int", low=1, optional=True),
    "warmup_ratio": _Rule("number", low=0, high=1),
    "micro_batch_tokens": _Rule("int", low=1, optional=True),
    "activation_memory_mb": _Rule("int", low=1),
    "gradient_checkpointing": _Rule("bool", optional=True),
    "precision": _Rule("choice", choices=PRECISIONS),
    "max_grad_norm": _Rule("number", low=0),
    "weight_decay": _Rule("number", low=0),
    "metrics_interval": _Rule("number", low=0),
    "fused_lora": _Rule("bool"),
    "device": _Rule("text", optional=True),
    "checkpoint_interval": _Rule("number", low=0, optional=True),
    "distributed": _Rule("bool", optional=True),
}

_FIELD_NAMES = tuple(f.name for f in fields(TrainingConfig))
assert set(_FIELD_NAMES) == set(RULES), "every TrainingConfig field has a rule"
