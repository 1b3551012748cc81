"""The training engine: SFT and DPO, LoRA and full fine-tuning, on CPU or GPU.

Pure Python + torch/transformers/peft (no Django), so it can be tested and
benchmarked on its own; the Celery task drives it through :class:`Callbacks`.
:func:`train` runs named steps in order (listed above it); :class:`TrainingConfig` (config.py)
refuses a value it cannot train with when it is made.

What the code does to train fast:
* packing: a step's examples are laid end to end in one row with position ids
  restarting per example and attention computed per example (no padding, no
  cross-example attention, no masked blocks computed), see ``packing.py``; on a
  GPU in bf16 one variable-length flash kernel call a layer does the same;
* the LM head runs only on the hidden states whose next token carries a label:
  full-vocabulary logits are never built for prompt tokens;
* reference log-probs for DPO are computed once before training;
* threads = physical cores, no per-step full-vocabulary metrics, and metric
  events at most once per ``metrics_interval``;
* precision: fp32, except where the hardware multiplies bf16 matrices (a GPU with bf16, a CPU with AMX or
  AVX512-BF16): there bf16 compute with fp32 trainable weights and optimizer state (``use_bf16``). On such a
  CPU short examples' attention stays fp32 (packing.segmented_sdpa_forward) and packed rows grow in steps of
  64 tokens so that the shapes of bf16 matmuls repeat (``pad_multiple_for``).
Measurements behind these choices, with the machines they were taken on: docs/engine-notes.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from console.cpus import bf16_isa

from . import budget, fused_head
from .config import TrainingConfig, TrainingConfigError  # noqa: F401 (the engine's interface)
from .fast_linear import frozen_linear, patch_frozen_linears
from .fused_lora import fuse_lora_layers
from .fused_rope import patch_llama_rope
from .memory import bound_native_caches
from .packing import (
    VARLEN_KERNELS,
    MicroBatch,
    build_micro_batches,
    choose_attention,
    kernels_available,
    register_attention,
)
from .render import Renderer, RenderError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
TRAINABLE_FILE = "trainable.safetensors"
RESULT_FILE = "training_result.json"


class Callbacks:
    """Progress sink for :func:`train`; the default does nothing."""

    def event(self, level: str, message: str, data: dict | None = None) -> None:
        """A log line for the task's event list (``level``: info, warning, error)."""

    def metrics(self, data: dict) -> None:
        """Progress numbers, at most about once per ``metrics_interval`` and at each epoch end."""

    def checkpoint(self, epoch: int, path: Path, *, step: int = 0, complete: bool = True) -> None:
        """A checkpoint was written to ``path`` after global ``step``: the end of ``epoch`` (1-based)
        when ``complete``, else a point inside it (a resume from it continues at the next step)."""

    def should_stop(self) -> bool:
        """Polled every step (and inside long loops); True makes train() raise TrainingCancelled."""
        return False

    def checkpoint_before_stop(self) -> bool:
        """Asked when should_stop() stopped the loop between steps: True saves a checkpoint of the step reached
        first (a pause, resumed from it step for step), False stops without one (a cancel)."""
        return False


class TrainingCancelled(Exception):
    """should_stop() asked to stop."""


class TrainingDataError(Exception):
    """An example cannot be trained on; the message names it (1-based line) and why."""


class CheckpointError(Exception):
    """A checkpoint to resume from cannot be read: the run stops rather than start over silently."""


@dataclass
class TrainingResult:
    output_dir: Path
    trained_tokens: int
    steps: int
    epochs_completed: int
    final_loss: float | None
    final_eval_loss: float | None
    tokens_per_second: float
    train_tokens_per_epoch: int
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


# ----------------------------------------------------------------------------- helpers


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not help matmuls)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(allowed))
        cores.add((package, core))
    return max(1, len(cores))


def split_examples(examples: Sequence[dict], fraction: float = 0.1, seed: int = 42) -> tuple[list, list]:
    """Automatic validation split: (train, eval), eval at least one example when there are 2+."""
    indices = list(range(len(examples)))
    random.Random(seed).shuffle(indices)
    n_eval = max(1, round(len(examples) * fraction)) if len(examples) > 1 else 0
    eval_set = set(indices[:n_eval])
    train = [ex for i, ex in enumerate(examples) if i not in eval_set]
    evals = [ex for i, ex in enumerate(examples) if i in eval_set]
    return train, evals


Unit = list[tuple[list[int], list[bool]]]  # SFT: [sequence]; DPO: [chosen, rejected]


def _examples(n: int) -> str:
    """``n`` with "example" in the right number, for the engine's (English) events."""
    return f"{n} example" if n == 1 else f"{n} examples"


def _were(n: int) -> str:
    return "was" if n == 1 else "were"


def encode_examples(
    renderer: Renderer, examples: Sequence[dict], method: str, callbacks: Callbacks, what: str = "training"
) -> tuple[list[Unit], int, int, int]:
    """Render and tokenize all examples. Returns (units, tokens, truncated, skipped)."""
    units: list[Unit] = []
    tokens = truncated = skipped = 0
    for index, example in enumerate(examples, 1):
        if index % 64 == 0 and callbacks.should_stop():
            raise TrainingCancelled("cancelled while preparing data")
        try:
            if method == "dpo":
                pair = renderer.encode_dpo(example)
                unit = [
                    (pair.chosen.input_ids, pair.chosen.loss_mask),
                    (pair.rejected.input_ids, pair.rejected.loss_mask),
                ]
                was_truncated = pair.truncated
            else:
                encoded = renderer.encode_sft(example)
                unit = [(encoded.input_ids, encoded.loss_mask)]
                was_truncated = encoded.truncated
        except RenderError as exc:
            raise TrainingDataError(f"{what} example {index} (line {index}): {exc}") from None
        truncated += was_truncated
        # the first token never gets a label (nothing predicts it); a sequence whose
        # labelled tokens were all cut off teaches nothing
        if any(not any(mask[1:]) for _ids, mask in unit):
            skipped += 1
            continue
        units.append(unit)
        tokens += sum(len(ids) for ids, _ in unit)
    return units, tokens, truncated, skipped


def resolve_device(config: TrainingConfig) -> str:
    return config.device or ("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(config: TrainingConfig, device: str) -> bool:
    """bf16 compute: asked for, or "auto" on a GPU that supports it or on a CPU with fast bf16 (``bf16_isa``)."""
    if config.precision == "bf16":
        return True
    if config.precision != "auto":
        return False
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and bf16_isa() is not None


def pad_multiple_for(device: str, bf16: bool) -> int:
    """A packed row's width is rounded up to a multiple of this (packing.build_micro_batches).

    On a CPU in bf16, oneDNN builds a kernel for every new shape of a bf16 matmul, and a packed row has a new
    length almost every micro-batch: widths in steps of 64 make the shapes repeat, at the price of at most 63
    padding tokens (without labels) a micro-batch. fp32 and GPUs get no padding (measurements:
    docs/engine-notes.md)."""
    return 64 if bf16 and device == "cpu" else 1


def precision_message(config: TrainingConfig, device: str, bf16: bool) -> str:
    """The task's event that says which precision trained it, and why."""
    if not bf16:
        why = "asked for" if config.precision == "fp32" else "this device has no fast bf16"
        return f"Precision: fp32 ({why})"
    if config.precision == "bf16":
        why = "asked for"
    else:
        why = f"this CPU has {bf16_isa()}" if device == "cpu" else "this GPU supports bf16"
    parts = "bf16 frozen weights, " if config.training_type == "lora" else ""
    return f"Precision: bf16 compute ({why}); {parts}fp32 trainable weights and optimizer state"


def attention_for(config: TrainingConfig, device: str) -> str:
    """The registered attention a training model runs (see ``packing.choose_attention``)."""
    return register_attention(choose_attention(device=device, bf16=use_bf16(config, device), **kernels_available()))


def load_model(model_dir: Path, config: TrainingConfig):
    """The base model with segmented attention, wrapped for LoRA when asked.

    fp32 by default. Where the run is bf16 (use_bf16), LoRA's frozen base weights are bf16 (half the
    memory, and no cast of every weight at every step) and the adapters fp32 (peft keeps adapter weights
    in fp32), under bf16 autocast; full fine-tuning keeps fp32 master weights (AdamW updates them) and
    computes in bf16 under autocast. TF32 matmuls on CUDA."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(config)
    attn = attention_for(config, device)
    if config.fused_lora:
        patch_llama_rope()
    dtype = torch.float32
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if use_bf16(config, device) and config.training_type == "lora":
        dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation=attn)
    model.config.use_cache = False
    model.to(device)
    if config.training_type == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target,
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft calls a deprecated transformers helper
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora)
        if config.fused_lora:
            fuse_lora_layers(model, config.lora_dropout)
            patch_frozen_linears(model)
    elif config.training_type != "full":
        raise ValueError(f"unknown training_type {config.training_type!r}")
    return model


def _parts(model):
    """(decoder body, lm head) of a causal LM, unwrapping PEFT."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, base.base_model_prefix)
    return body, base.get_output_embeddings()


def token_logps(model, mb: MicroBatch) -> torch.Tensor:
    """Log-probability of every labelled token of the micro-batch (1-D, in ``mb.src`` order)."""
    body, head = _parts(model)
    device = head.weight.device
    varlen = {}
    if body.config._attn_implementation in VARLEN_KERNELS:  # the packed row's offsets, once for every layer
        cu = mb.cu_seqlens.to(device)
        varlen = {
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": mb.max_seqlen,
            "max_length_k": mb.max_seqlen,
        }
    hidden = body(
        input_ids=mb.input_ids.to(device),
        position_ids=mb.position_ids.to(device),
        segments=mb.segments,
        use_cache=False,
        **varlen,
    ).last_hidden_state
    picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.src.to(device))
    if fused_head.usable(head.weight, head.bias):  # LoRA: the logits are never kept (fused_head.py)
        return fused_head.frozen_head_logps(picked, head.weight, head.bias, mb.tgt.to(device))
    logits = frozen_linear(picked, head.weight, head.bias).float()
    return -F.cross_entropy(logits, mb.tgt.to(device), reduction="none")


def sequence_logps(model, mb: MicroBatch, logps: torch.Tensor | None = None) -> torch.Tensor:
    """Summed log-probability of the labelled tokens of each sequence of the micro-batch."""
    logps = token_logps(model, mb) if logps is None else logps
    sums = torch.zeros(mb.n_sequences, dtype=logps.dtype, device=logps.device)
    return sums.index_add(0, mb.seq.to(logps.device), logps)


class TokenLogps(torch.nn.Module):
    """:func:`token_logps` as a module: what a distributed wrapper (DDP) runs, so its gradient hooks see it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mb: MicroBatch) -> torch.Tensor:
        return token_logps(self.model, mb)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid DPO loss per pair; inputs are (pairs, 2) log-probs [chosen, rejected].
    Returns (losses, reward margins)."""
    logits = (policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])
    return -F.logsigmoid(beta * logits), beta * logits.detach()


class _Stopper:
    def __init__(self, callbacks: Callbacks):
        self.callbacks = callbacks

    def check(self) -> None:
        if self.callbacks.should_stop():
            raise TrainingCancelled("training cancelled")


class _MainProcess(Callbacks):
    """A distributed run's callbacks: the main process reports; a stop it is asked for stops every process
    (should_stop is a collective: every process polls it at the same points)."""

    def __init__(self, callbacks: Callbacks, dist):
        self.inner, self.dist = callbacks, dist

    def event(self, level, message, data=None):
        if self.dist.is_main:
            self.inner.event(level, message, data)

    def metrics(self, data):
        if self.dist.is_main:
            self.inner.metrics(data)

    def checkpoint(self, epoch, path, *, step=0, complete=True):
        if self.dist.is_main:
            self.inner.checkpoint(epoch, path, step=step, complete=complete)

    def should_stop(self) -> bool:
        return self.dist.any(self.dist.is_main and self.inner.should_stop())

    def checkpoint_before_stop(self) -> bool:
        return self.dist.any(self.dist.is_main and self.inner.checkpoint_before_stop())


# ----------------------------------------------------------------------------- a step's forward and backward


class _Run:
    """One model's forward and backward over a step's examples, its validation loss and (DPO) the reference
    log-probs: what train() (through _Loop) and evaluate_loss() run."""

    def __init__(self, model, units, eval_units, config: TrainingConfig, callbacks: Callbacks, pad_id: int):
        self.model = model
        self.units = units
        self.eval_units = eval_units
        self.config = config
        self.cb = callbacks
        self.stopper = _Stopper(callbacks)
        self.pad_id = pad_id
        self.dpo = config.method == "dpo"
        self.ref_logps: torch.Tensor | None = None  # (units, 2) for DPO
        self.eval_ref_logps: torch.Tensor | None = None
        self.dist = None  # distributed.Accelerated in a run through accelerate

    micro_batch_tokens = 2048
    autocast = False
    pad_multiple = 1  # pad_multiple_for

    def batches(self, unit_ids: list[int], units) -> list[MicroBatch]:
        # a unit longer than the budget gets a micro-batch of its own (units are never split)
        return build_micro_batches(
            units, unit_ids, self.micro_batch_tokens, self.config.packing, self.pad_id, self.pad_multiple
        )

    def precision(self):
        """bf16 autocast around a forward pass when the run uses it (losses are computed in fp32)."""
        device = _parts(self.model)[1].weight.device.type
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.autocast)

    @torch.no_grad()
    def reference_logps(self, units) -> torch.Tensor:
        """Log-probs of the base model (adapters off) for every DPO pair."""
        out = torch.zeros(len(units), 2)
        ids = list(range(len(units)))
        chunk = 32
        ctx = self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else _nullcontext()
        was_training = self.model.training
        self.model.eval()
        with ctx:
            for start in range(0, len(ids), chunk):
                self.stopper.check()
                for mb in self.batches(ids[start : start + chunk], units):
                    with self.precision():
                        out[mb.units] = sequence_logps(self.model, mb).float().view(-1, 2).cpu()
        self.model.train(was_training)
        return out

    @torch.no_grad()
    def evaluate(self, units=None, ref: torch.Tensor | None = None) -> float | None:
        """Validation loss: token-mean cross-entropy (SFT) or mean pair loss (DPO)."""
        units = self.eval_units if units is None else units
        if not units:
            return None
        ref = self.eval_ref_logps if ref is None else ref
        self.model.eval()
        total = 0.0
        count = 0
        ids = list(range(len(units)))
        for start in range(0, len(ids), 32):
            self.stopper.check()
            for mb in self.batches(ids[start : start + 32], units):
                if self.dpo:
                    with self.precision():
                        policy = sequence_logps(self.model, mb, self.logps(mb)).float().view(-1, 2)
                    losses, _ = dpo_loss(policy, ref[mb.units].to(policy.device), self.config.dpo_beta)
                    total += losses.sum().item()
                    count += len(mb.units)
                else:
                    with self.precision():
                        logps = self.logps(mb).float()
                    total += -logps.sum().item()
                    count += logps.numel()
        self.model.train()
        return total / max(count, 1)

    def logps(self, mb: MicroBatch) -> torch.Tensor:
        """:func:`token_logps`, through the distributed wrapper when there is one (a sharded model's
        weights are gathered by it)."""
        return self.dist.forward(mb) if self.dist is not None else token_logps(self.model, mb)

    def step(self, unit_ids: list[int]) -> tuple[float, float | None, int]:
        """Forward/backward over the step's examples (in token-budget micro-batches).
        Returns (loss, DPO reward margin or None, tokens).

        Distributed, each process takes its share of the examples and the loss is normalised by the
        whole step's count, so the averaged gradients are those of the single-process step."""
        dist = self.dist
        weight = 1.0
        if dist is not None:
            unit_ids, weight = dist.share(unit_ids)
        micro = self.batches(unit_ids, self.units)
        tokens = sum(mb.n_tokens for mb in micro) * weight
        loss_total = 0.0
        margin_total = 0.0
        if self.dpo:
            denominator = len(unit_ids) * weight
        else:
            denominator = sum(int(mb.src.numel()) for mb in micro) * weight
        scale = 1.0
        if dist is not None:
            denominator, tokens = dist.total(denominator), dist.total(tokens)
            scale = dist.world * weight  # DDP averages the processes' gradients
        for i, mb in enumerate(micro):
            if dist is None:
                self.stopper.check()  # distributed, it is polled once a step (a collective)
            sync = dist is None or i == len(micro) - 1
            with _nullcontext() if sync else dist.no_sync():
                with self.precision():
                    logps = self.logps(mb)
                if self.dpo:
                    policy = sequence_logps(self.model, mb, logps).float().view(-1, 2)
                    reference = self.ref_logps[mb.units].to(policy.device)
                    losses, margins = dpo_loss(policy, reference, self.config.dpo_beta)
                    loss = losses.sum() / denominator
                    margin_total += margins.sum().item() * weight
                else:
                    loss = -logps.float().sum() / denominator
                (loss * scale if scale != 1.0 else loss).backward()
            loss_total += loss.item() * weight
        if dist is not None:
            loss_total, margin_total = dist.total(loss_total), dist.total(margin_total)
        margin = margin_total / denominator if self.dpo else None
        return loss_total, margin, int(tokens)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _memory_plan(model, config: TrainingConfig, device: str, units) -> budget.MemoryPlan:
    """Micro-batch tokens and checkpointing from the memory left for activations (budget.py)."""
    shape = budget.ModelShape.from_config(model.config)
    longest = max((sum(len(ids) for ids, _ in unit) for unit in units), default=1)
    dtype_bytes = 2 if use_bf16(config, device) else 4
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info()
        # the optimizer's moments are allocated at the first step: keep their share and a margin
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        free = int(free * 0.85) - trainable * 12
    else:
        free = config.activation_memory_mb * 2**20
    head = _parts(model)[1]
    plan = budget.plan_micro_batches(
        free_bytes=free,
        shape=shape,
        longest_sequence=longest,
        dtype_bytes=dtype_bytes,
        fused_head=fused_head.usable(head.weight, head.bias),
    )
    if config.micro_batch_tokens:
        plan = budget.MemoryPlan(config.micro_batch_tokens, plan.gradient_checkpointing, plan.bytes_per_token, True)
    if config.gradient_checkpointing is not None:
        plan = budget.MemoryPlan(plan.micro_batch_tokens, config.gradient_checkpointing, plan.bytes_per_token, True)
    return plan


def _lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _make_optimizer(params, config: TrainingConfig):
    kwargs: dict[str, Any] = {"lr": config.learning_rate, "weight_decay": config.weight_decay}
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # fused AdamW is not built for every device
        return torch.optim.AdamW(params, foreach=True, **kwargs)


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    path: Path,
    model,
    tokenizer,
    optimizer,
    scheduler,
    state: dict,
    lora: bool,
    weights: dict | None = None,
    optimizer_state: dict | None = None,
) -> None:
    """Weights being trained + optimizer/scheduler/RNG/step state, written atomically (``weights`` and
    ``optimizer_state``: a sharded run's, gathered; else the model's and the optimizer's own)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = _trainable(model) if weights is None else weights
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(tmp / TRAINABLE_FILE))
    if lora:  # an adapter folder that can be served as is
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    torch.save(
        {
            **state,
            "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _now() -> float:
    return time.monotonic()


# ----------------------------------------------------------------------------- train(), step by step
#
# train() calls these in order; each takes what the ones before it made as arguments (no step reads a
# variable that a later one assigns):
#   _distribution        one process, or one of several through accelerate (config and callbacks adjusted)
#   _threads_and_seed    torch's threads, the kernel-cache bound, the seed
#   _prepare_data        render and tokenize the examples (_Data)
#   _prepare_model       load the model, plan its memory, DPO's reference log-probs (_Run)
#   _plan_steps          optimizer and learning-rate schedule over every step of every epoch (_Plan)
#   _start_progress      where the loop starts: step 0, or a checkpoint's state (_Progress)
#   _Loop.run_epochs     the epochs: steps, evaluation, metrics (_Reporter) and checkpoints (_Checkpoints)
#   _finish              the final model, its result file, the TrainingResult


@dataclass
class _Data:
    """The examples rendered and tokenized (:func:`encode_examples`)."""

    tokenizer: Any
    pad_id: int
    units: list[Unit]
    eval_units: list[Unit]
    epoch_tokens: int  # tokens of one pass over the training units


@dataclass
class _Plan:
    """The optimizer and its schedule: ``steps_per_epoch`` steps of ``batch_size`` units, every epoch."""

    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    total_steps: int
    trainable_parameters: int  # counted before a distributed wrapper shards them
    parameters: int


@dataclass
class _Progress:
    """The point reached: what a checkpoint records and a resume restores."""

    first_epoch: int = 1
    skip_steps: int = 0  # steps of first_epoch already trained before the checkpoint (mid-epoch resume)
    global_step: int = 0
    trained_tokens: int = 0
    history: list[dict] = field(default_factory=list)  # every metrics report, resumed ones included
    prior_elapsed: float = 0.0  # seconds trained by the runs before this one (resumed)


def _distribution(config: TrainingConfig, cb: Callbacks):
    """(config, callbacks, dist): ``dist`` is None in a single process; launched as one of several
    (``config.distributed``, or WORLD_SIZE > 1), the config names this process's device and only the main
    process reports (_MainProcess)."""
    if not (config.distributed or (config.distributed is None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1)):
        return config, cb, None
    from .distributed import Accelerated

    dist = Accelerated(shard=config.training_type == "full")  # full fine-tuning: FSDP2 (distributed.py)
    return replace(config, device=dist.device), _MainProcess(cb, dist), dist


def _threads_and_seed(config: TrainingConfig) -> int:
    """Set torch's threads (returned), bound the native kernel caches and seed Python's and torch's RNGs."""
    threads = config.num_threads or physical_cores()
    torch.set_num_threads(threads)
    bound_native_caches()  # oneDNN's kernel cache does not grow with every new packed length (memory.py)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    return threads


def _prepare_data(
    model_dir: Path,
    train_examples: Sequence[dict],
    eval_examples: Sequence[dict] | None,
    config: TrainingConfig,
    cb: Callbacks,
) -> _Data:
    """Render and tokenize both sets; warn of truncated and skipped examples; refuse a set with nothing to learn."""
    from transformers import AutoTokenizer

    cb.event("info", "Preparing data", {"examples": len(train_examples)})
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    renderer = Renderer(tokenizer, config.max_seq_len)
    units, epoch_tokens, truncated, skipped = encode_examples(renderer, train_examples, config.method, cb)
    eval_units: list[Unit] = []
    if eval_examples:
        eval_units, _, eval_truncated, _ = encode_examples(renderer, eval_examples, config.method, cb, "validation")
        truncated += eval_truncated
    if truncated:
        cb.event(
            "warning",
            f"{_examples(truncated)} longer than {config.max_seq_len} tokens {_were(truncated)} truncated",
            {"truncated": truncated, "max_seq_len": config.max_seq_len},
        )
    if skipped:
        cb.event(
            "warning",
            f"{_examples(skipped)} had no assistant tokens left after truncation and {_were(skipped)} skipped",
        )
    if not units:
        raise TrainingDataError("no training example has assistant tokens to learn from")
    return _Data(tokenizer, pad_id, units, eval_units, epoch_tokens)


def _prepare_model(model_dir: Path, data: _Data, config: TrainingConfig, cb: Callbacks, dist, threads: int) -> _Run:
    """Load the model and make the :class:`_Run` that trains it: precision, micro-batch size and gradient
    checkpointing from the memory plan, and (DPO) the reference model's log-probs of every pair."""
    cb.event("info", "Loading model", {"model": model_dir.name, "threads": threads})
    model = load_model(model_dir, config)
    model.train()
    # Loading draws a different amount of randomness the first time in a process (transformers initialises what
    # it then overwrites): seeded again here, dropout and everything after are the same in a fresh worker and in
    # one that trained before (a task's seed reproduces it either way).
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    run = _Run(model, data.units, data.eval_units, config, cb, data.pad_id)
    run.dist = dist
    device = resolve_device(config)
    run.autocast = use_bf16(config, device)
    run.pad_multiple = pad_multiple_for(device, run.autocast)
    plan = _memory_plan(model, config, device, data.units + data.eval_units)
    run.micro_batch_tokens = plan.micro_batch_tokens
    if plan.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    cb.event(
        "info",
        f"Memory plan: {plan.micro_batch_tokens} tokens a micro-batch"
        + (", gradient checkpointing" if plan.gradient_checkpointing else "")
        + (", bf16 autocast" if run.autocast else ""),
        {
            "micro_batch_tokens": plan.micro_batch_tokens,
            "gradient_checkpointing": plan.gradient_checkpointing,
            "bf16": run.autocast,
            "fits": plan.fits,
        },
    )
    cb.event(
        "info",
        precision_message(config, device, run.autocast),
        {"precision": "bf16" if run.autocast else "fp32", "asked": config.precision},
    )
    if run.dpo:
        cb.event("info", "Computing reference log-probabilities")
        run.ref_logps = run.reference_logps(data.units)
        if data.eval_units:
            run.eval_ref_logps = run.reference_logps(data.eval_units)
    return run


def _enable_gradient_checkpointing(model) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5's name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _plan_steps(run: _Run, config: TrainingConfig, cb: Callbacks) -> _Plan:
    """The optimizer over the trainable weights and the linear warmup-then-decay schedule of every step;
    distributed, the model is wrapped (and, for full fine-tuning, sharded) first."""
    model, dist = run.model, run.dist
    n_trainable = sum(p.numel() for p in _trainable(model).values())
    n_total = sum(p.numel() for p in model.parameters())
    if dist is not None:
        dist.wrap(TokenLogps(model), bf16=run.autocast)  # sharding replaces the parameters: before the optimizer
        how = "sharded (FSDP2, a decoder layer a unit)" if dist.sharded else "data parallel (DDP)"
        cb.event("info", f"{dist.world} processes, {how}", {"processes": dist.world, "sharded": dist.sharded})
    params = list(_trainable(model).values())
    optimizer = _make_optimizer(params, config)
    if dist is not None:
        optimizer = dist.prepare_optimizer(optimizer)
    steps_per_epoch = math.ceil(len(run.units) / config.batch_size)
    total_steps = steps_per_epoch * config.n_epochs
    warmup = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup))
    return _Plan(params, optimizer, scheduler, steps_per_epoch, total_steps, n_trainable, n_total)


def _start_progress(resume_from: Path | None, run: _Run, plan: _Plan, cb: Callbacks) -> _Progress:
    """Step 0, or the state of the checkpoint at ``resume_from`` (weights, optimizer, schedule and RNGs restored)."""
    if resume_from is None:
        return _Progress()
    state = _resume(Path(resume_from), run.model, plan.optimizer, plan.scheduler, run.dist)
    progress = _Progress(
        first_epoch=state["epoch"] + 1,
        skip_steps=state.get("step_in_epoch", 0),
        global_step=state["global_step"],
        trained_tokens=state["trained_tokens"],
        history=state.get("history", []),
        prior_elapsed=state.get("elapsed_time", 0.0),
    )
    cb.event(
        "info",
        f"Resumed from step {progress.global_step} (epoch {state['epoch']}, +{progress.skip_steps} steps)",
        {"epoch": state["epoch"], "step": progress.global_step, "step_in_epoch": progress.skip_steps},
    )
    return progress


class _Reporter:
    """Reporting: the metrics (at most one report a ``metrics_interval``, and one at each epoch's end), each
    also appended to the progress' history, and the figures of the result."""

    def __init__(self, config: TrainingConfig, cb: Callbacks, plan: _Plan, progress: _Progress, started: float):
        self.config, self.cb, self.plan, self.progress = config, cb, plan, progress
        self.started = started  # when train() was called
        self.loop_started = _now()
        self.steps_before = progress.global_step  # steps of the runs before this one (resumed)
        self.tokens_this_run = 0
        self.last_emit = 0.0
        self.pending: list[float] = []  # step losses since the last metrics report
        self.pending_margin: list[float] = []
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        history = progress.history
        if history:  # resumed: the figures so far stand until new ones come
            self.last_loss = history[-1].get("loss")
            self.last_eval = next((h["eval_loss"] for h in reversed(history) if h.get("eval_loss") is not None), None)

    def add_step(self, loss: float, margin: float | None, tokens: int) -> None:
        self.tokens_this_run += tokens
        self.last_loss = loss
        self.pending.append(loss)
        if margin is not None:
            self.pending_margin.append(margin)

    def interval_passed(self) -> bool:
        return _now() - self.last_emit >= self.config.metrics_interval

    def report_pending(self, epoch_float: float) -> None:
        """A report of the steps not reported yet, if any (before a checkpoint: the chart a resume continues
        has every step up to it)."""
        if self.pending:
            self.report(epoch_float, None)

    def report(self, epoch_float: float, eval_loss: float | None) -> dict:
        progress, total_steps = self.progress, self.plan.total_steps
        now = _now()
        running = now - self.loop_started
        speed = self.tokens_this_run / running if running > 0 else 0.0
        steps_done_here = progress.global_step - self.steps_before
        per_step = running / steps_done_here if steps_done_here else 0.0
        pending, pending_margin = self.pending, self.pending_margin
        data = {
            "epoch": round(epoch_float, 4),
            "current_steps": progress.global_step,
            "total_steps": total_steps,
            "elapsed_time": round(progress.prior_elapsed + now - self.started, 2),
            "remaining_time": round(per_step * (total_steps - progress.global_step), 2),
            "trained_tokens": progress.trained_tokens,
            "loss": round(sum(pending) / len(pending), 6) if pending else self.last_loss,
            "eval_loss": None if eval_loss is None else round(eval_loss, 6),
            "learning_rate": self.plan.scheduler.get_last_lr()[0],
            "tokens_per_second": round(speed, 2),
        }
        if pending_margin:
            data["reward_margin"] = round(sum(pending_margin) / len(pending_margin), 6)
        pending.clear()
        pending_margin.clear()
        progress.history.append(data)
        self.cb.metrics(data)
        self.last_emit = now
        return data


class _Checkpoints:
    """Checkpoints: one at each epoch's end (``epoch-N``), one every ``checkpoint_interval`` seconds inside an
    epoch and one before a pause (``step-N``, of which only the newest is kept)."""

    def __init__(
        self,
        run: _Run,
        data: _Data,
        plan: _Plan,
        progress: _Progress,
        config: TrainingConfig,
        cb: Callbacks,
        output_dir: Path,
        started: float,
    ):
        self.run, self.data, self.plan, self.progress = run, data, plan, progress
        self.config, self.cb, self.output_dir, self.started = config, cb, output_dir, started
        self.interval = config.checkpoint_interval or 0.0
        self.last_saved = _now()
        self.saved_step = progress.global_step  # the step of the newest checkpoint (or the start)

    def due(self, step_in_epoch: int) -> bool:
        """After step ``step_in_epoch`` (0-based) of an epoch: whether a mid-epoch checkpoint is due (never after
        the epoch's last step, which the epoch's checkpoint follows)."""
        dist = self.run.dist
        due = bool(
            step_in_epoch < self.plan.steps_per_epoch - 1
            and self.interval
            and _now() - self.last_saved >= self.interval
        )
        if dist is not None and self.interval:
            due = dist.any(due)  # clocks differ: every process must checkpoint at the same step
        return due

    def unsaved_steps(self) -> bool:
        return self.progress.global_step > self.saved_step

    def save(self, epoch: int, steps_done: int) -> None:
        """Checkpoint after ``steps_done`` steps of ``epoch`` (all of them: the epoch is complete)."""
        self._write(epoch, steps_done)
        self.last_saved, self.saved_step = _now(), self.progress.global_step

    def _write(self, epoch: int, steps_done: int) -> None:
        run, plan, progress, dist = self.run, self.plan, self.progress, self.run.dist
        complete = steps_done == plan.steps_per_epoch
        name = f"epoch-{epoch}" if complete else f"step-{progress.global_step}"
        path = self.output_dir / CHECKPOINTS / name
        weights = optimizer_state = None
        if dist is not None and dist.sharded:  # gathered on the main process (every process takes part)
            weights = dist.full_weights(trainable_only=True)
            optimizer_state = dist.full_optimizer_state(plan.optimizer)
        if dist is not None and not dist.is_main:  # every process holds the same weights: one writes them
            dist.wait()
            return
        save_checkpoint(
            path,
            run.model,
            self.data.tokenizer,
            plan.optimizer,
            plan.scheduler,
            {
                "epoch": epoch if complete else epoch - 1,  # epochs complete
                "step_in_epoch": 0 if complete else steps_done,
                "global_step": progress.global_step,
                "trained_tokens": progress.trained_tokens,
                "history": progress.history,
                "elapsed_time": progress.prior_elapsed + _now() - self.started,
                "config": asdict(self.config),
            },
            # an epoch's checkpoint is also a servable adapter folder; a mid-epoch one only what a resume reads
            lora=self.config.training_type == "lora" and complete,
            weights=weights,
            optimizer_state=optimizer_state,
        )
        # a mid-epoch checkpoint is superseded by any later one: only the newest is resumed from
        for older in (self.output_dir / CHECKPOINTS).glob("step-*"):
            if older != path:
                shutil.rmtree(older, ignore_errors=True)
        self.cb.checkpoint(epoch, path, step=progress.global_step, complete=complete)
        if dist is not None:
            dist.wait()


class _Loop:
    """The epochs: each step's forward/backward (_Run.step) and optimizer update, a stop polled before each
    step, metrics and checkpoints after it, and at each epoch's end the validation loss and a checkpoint."""

    def __init__(
        self,
        run: _Run,
        plan: _Plan,
        progress: _Progress,
        reporter: _Reporter,
        checkpoints: _Checkpoints,
        config: TrainingConfig,
        cb: Callbacks,
    ):
        self.run, self.plan, self.progress = run, plan, progress
        self.reporter, self.checkpoints, self.config, self.cb = reporter, checkpoints, config, cb
        self.epochs_completed = progress.first_epoch - 1

    def run_epochs(self) -> None:
        progress = self.progress
        for epoch in range(progress.first_epoch, self.config.n_epochs + 1):
            self.epoch(epoch, progress.skip_steps if epoch == progress.first_epoch else 0)
            self.end_epoch(epoch)

    def epoch(self, epoch: int, first_step: int) -> None:
        config, steps_per_epoch = self.config, self.plan.steps_per_epoch
        # the data order of an epoch depends only on the seed and the epoch: a resumed run sees the same
        generator = torch.Generator().manual_seed(config.seed + epoch)
        order = torch.randperm(len(self.run.units), generator=generator).tolist()
        for s in range(first_step, steps_per_epoch):
            self.stop_point(epoch, s)
            loss, margin, tokens = self.run.step(order[s * config.batch_size : (s + 1) * config.batch_size])
            self.update(loss, margin, tokens)
            epoch_float = epoch - 1 + (s + 1) / steps_per_epoch
            if self.checkpoints.due(s):
                self.reporter.report_pending(epoch_float)
                self.checkpoints.save(epoch, s + 1)
            elif s < steps_per_epoch - 1 and self.reporter.interval_passed():
                self.reporter.report(epoch_float, None)

    def stop_point(self, epoch: int, s: int) -> None:
        """Before step ``s`` of ``epoch``: raise TrainingCancelled when a stop is asked for, after saving the
        steps not saved yet when it is a pause (checkpoint_before_stop)."""
        try:
            self.run.stopper.check()
        except TrainingCancelled:
            if self.checkpoints.unsaved_steps() and self.cb.checkpoint_before_stop():  # a pause: keep the steps done
                self.reporter.report_pending(epoch - 1 + s / self.plan.steps_per_epoch)
                self.checkpoints.save(epoch, s)
            raise

    def update(self, loss: float, margin: float | None, tokens: int) -> None:
        """The optimizer's update from the step's gradients (clipped), and the step counted."""
        plan, progress = self.plan, self.progress
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {progress.global_step + 1}")
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(plan.params, self.config.max_grad_norm, foreach=True)
        plan.optimizer.step()
        plan.scheduler.step()
        plan.optimizer.zero_grad(set_to_none=True)
        progress.global_step += 1
        progress.trained_tokens += tokens
        self.reporter.add_step(loss, margin, tokens)

    def end_epoch(self, epoch: int) -> None:
        reporter = self.reporter
        reporter.last_eval = self.run.evaluate()
        reporter.report(float(epoch), reporter.last_eval)
        self.epochs_completed = epoch
        message = f"Epoch {epoch}/{self.config.n_epochs} finished"
        self.cb.event("info", message, {"epoch": epoch, "loss": reporter.last_loss, "eval_loss": reporter.last_eval})
        self.checkpoints.save(epoch, self.plan.steps_per_epoch)


def _finish(loop: _Loop, data: _Data, config: TrainingConfig, cb: Callbacks, output_dir: Path) -> TrainingResult:
    """Save the final model (``final/``) with its result file; the result."""
    run, reporter, progress, dist = loop.run, loop.reporter, loop.progress, loop.run.dist
    loop_time = _now() - reporter.loop_started
    final_dir = output_dir / "final"
    cb.event("info", "Saving the model")
    full_weights = dist.full_weights(trainable_only=False) if dist is not None and dist.sharded else None
    if dist is None or dist.is_main:
        _save_final(run.model, data.tokenizer, final_dir, config, full_weights)
    if dist is not None:
        dist.wait()
    result = TrainingResult(
        output_dir=final_dir,
        trained_tokens=progress.trained_tokens,
        steps=progress.global_step,
        epochs_completed=loop.epochs_completed,
        final_loss=reporter.last_loss,
        final_eval_loss=reporter.last_eval,
        tokens_per_second=round(reporter.tokens_this_run / loop_time, 2) if loop_time > 0 else 0.0,
        train_tokens_per_epoch=data.epoch_tokens,
        history=progress.history,
    )
    if dist is None or dist.is_main:
        (final_dir / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=2))
    speed = {"trained_tokens": progress.trained_tokens, "tokens_per_second": result.tokens_per_second}
    cb.event("info", "Training finished", speed)
    return result


def train(
    *,
    model_dir: Path,
    train_examples: Sequence[dict],
    eval_examples: Sequence[dict] | None,
    config: TrainingConfig,
    output_dir: Path,
    callbacks: Callbacks | None = None,
    resume_from: Path | None = None,
) -> TrainingResult:
    """Fine-tune the model in ``model_dir`` on ``train_examples``; see the module docstring and the steps above."""
    config.validate()  # made valid, but a field may have been changed since
    config, cb, dist = _distribution(config, callbacks or Callbacks())
    started = _now()
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    threads = _threads_and_seed(config)
    data = _prepare_data(model_dir, train_examples, eval_examples, config, cb)
    run = _prepare_model(model_dir, data, config, cb, dist, threads)
    plan = _plan_steps(run, config, cb)
    progress = _start_progress(resume_from, run, plan, cb)
    cb.event(
        "info",
        "Training started",
        {
            "method": config.method,
            "training_type": config.training_type,
            "examples": len(data.units),
            "tokens_per_epoch": data.epoch_tokens,
            "total_steps": plan.total_steps,
            "trainable_parameters": plan.trainable_parameters,
            "parameters": plan.parameters,
        },
    )
    reporter = _Reporter(config, cb, plan, progress, started)
    checkpoints = _Checkpoints(run, data, plan, progress, config, cb, output_dir, started)
    loop = _Loop(run, plan, progress, reporter, checkpoints, config, cb)
    loop.run_epochs()
    return _finish(loop, data, config, cb, output_dir)


def _resume(path: Path, model, optimizer, scheduler, dist=None) -> dict:
    from safetensors.torch import load_file

    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
        saved = load_file(str(path / TRAINABLE_FILE))
    except Exception as exc:  # missing, truncated or corrupt: never start over in silence
        raise CheckpointError(f"the checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    current = _trainable(model)
    missing = set(current) - set(saved)
    if missing:
        raise CheckpointError(f"checkpoint {path} does not match the model (missing {sorted(missing)[:3]})")
    if dist is not None and dist.sharded:  # each process keeps its shard of the full tensors
        dist.load_full_state(saved, optimizer, state["optimizer"])
    else:
        with torch.no_grad():
            for name, param in current.items():
                param.copy_(saved[name])
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    return state


def _save_final(model, tokenizer, final_dir: Path, config: TrainingConfig, full_weights: dict | None = None) -> None:
    """LoRA: the PEFT adapter + tokenizer (servable by transformers serve); full: a bf16 model folder
    (of ``full_weights`` when given: a sharded model's, gathered)."""
    tmp = final_dir.with_name(final_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if config.training_type == "lora":
        model.save_pretrained(str(tmp))
    else:
        model.config.use_cache = True
        model.config.dtype = torch.bfloat16
        # the segmented attention is ours: a saved model must load anywhere
        model.config._attn_implementation = "sdpa"
        if full_weights is None:
            model.to(torch.bfloat16)
            model.save_pretrained(str(tmp), safe_serialization=True)
        else:
            bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in full_weights.items()}
            model.save_pretrained(str(tmp), state_dict=bf16, safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(final_dir, ignore_errors=True)
    tmp.rename(final_dir)


def evaluate_loss(
    *, model_dir: Path, examples: Sequence[dict], config: TrainingConfig, adapter_dir: Path | None = None
) -> float | None:
    """Validation loss of the base model (or base + a saved LoRA adapter) on ``examples``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(config.num_threads or physical_cores())
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    units, _, _, _ = encode_examples(Renderer(tokenizer, config.max_seq_len), examples, config.method, Callbacks())
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation=register_attention()
    )
    if adapter_dir is not None:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft calls a deprecated transformers helper
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter_dir))
    run = _Run(model, [], units, config, Callbacks(), pad_id)
    if run.dpo:
        run.eval_ref_logps = run.reference_logps(units)
    return run.evaluate()
