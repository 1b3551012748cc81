"""How many tokens a micro-batch may hold, and whether to recompute activations, from free memory;
and what a task needs at its peak, for the create form and the refusal of a task the node cannot hold.

Pure functions (no torch, no device): the engine asks the device what is free and calls them.
Activations of a decoder layer kept for the backward are, per token, about 8 hidden-wide and
2 intermediate-wide vectors (inputs of the linears, norms, attention output, the MLP's gate and
up projections); the LM head adds logits, their softmax and its gradient for each labelled
token (about half the tokens of a chat example). Measured on SmolLM2-135M (30 layers, hidden
576, intermediate 1536, vocabulary 49,152) in fp32: about 1.0 MB a token; the estimate says 1.2.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TOKENS = 16384
LABELLED_FRACTION = 0.5


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_hidden: int = 0  # width of the key and value projections (grouped-query attention); 0: hidden
    heads: int = 0  # attention heads (0: unknown)

    @classmethod
    def from_config(cls, config) -> ModelShape:
        return cls.from_dict(config.to_dict() if hasattr(config, "to_dict") else vars(config))

    @classmethod
    def from_dict(cls, config: dict) -> ModelShape:
        """From a config.json's keys (a transformers config's ``to_dict()``)."""
        config = {**config.get("text_config", {}), **config}  # multimodal configs nest the decoder's
        hidden = int(config["hidden_size"])
        heads = int(config.get("num_attention_heads") or 1)
        head_dim = int(config.get("head_dim") or hidden // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(config.get("intermediate_size") or 4 * hidden),
            vocab=int(config["vocab_size"]),
            kv_hidden=kv_heads * head_dim,
            heads=heads,
        )

    def parameters(self) -> int:
        """Parameters of a Llama-style decoder of this shape (tied embeddings), when no count is known."""
        kv = self.kv_hidden or self.hidden
        per_layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate
        return self.layers * per_layer + self.vocab * self.hidden

    def lora_parameters(self, r: int) -> int:
        """Adapter parameters of LoRA rank ``r`` on every linear of every layer (``all-linear``):
        r x (in + out) for q, k, v, o, gate, up and down."""
        kv = self.kv_hidden or self.hidden
        h, i = self.hidden, self.intermediate
        return self.layers * r * (2 * h + 2 * h + 2 * (h + kv) + 3 * (h + i))


def activation_bytes_per_token(
    shape: ModelShape, *, dtype_bytes: int = 4, checkpointing: bool = False, fused_head: bool = False
) -> int:
    """Bytes kept for the backward per token of a micro-batch (whole model), plus the head's share.

    With gradient checkpointing only each layer's input is kept, and one layer's full set is live
    at a time while it is recomputed. ``fused_head``: the head is frozen (LoRA) and the engine's fused head
    keeps only each labelled token's hidden-wide gradient (jobs/training/fused_head.py; its chunk of logits is
    transient and the same size whatever the micro-batch, counted in RUNTIME_BYTES), where the plain head
    keeps the fp32 logits, their log-softmax and gradient: counting those for a LoRA run made the CPU's
    256 MB budget hold 220 tokens where 290 fit, and split a typical step in three micro-batches, not two."""
    per_layer = (8 * shape.hidden + 2 * shape.intermediate) * dtype_bytes
    body = shape.layers * shape.hidden * dtype_bytes + per_layer if checkpointing else shape.layers * per_layer
    if fused_head:
        head = int(LABELLED_FRACTION * shape.hidden * 4)
    else:
        head = int(LABELLED_FRACTION * shape.vocab * 4 * 3)  # logits are fp32: logits, log-softmax, gradient
    return body + head


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch_tokens: int
    gradient_checkpointing: bool
    bytes_per_token: int
    fits: bool  # False: even the longest sequence, recomputed, does not fit


def plan_micro_batches(
    *,
    free_bytes: int,
    shape: ModelShape,
    longest_sequence: int,
    dtype_bytes: int = 4,
    cap: int = MAX_TOKENS,
    fused_head: bool = False,
) -> MemoryPlan:
    """The token budget of a micro-batch that fits ``free_bytes`` (memory left for activations).

    A micro-batch never splits a sequence, so it must hold the longest one: when it does not fit
    with every activation kept, gradient checkpointing is switched on (recompute in the backward)."""
    free_bytes = max(0, int(free_bytes))
    for checkpointing in (False, True):
        per_token = activation_bytes_per_token(
            shape, dtype_bytes=dtype_bytes, checkpointing=checkpointing, fused_head=fused_head
        )
        tokens = free_bytes // per_token
        if tokens >= max(longest_sequence, 1):
            return MemoryPlan(max(min(tokens, cap), longest_sequence), checkpointing, per_token, True)
    return MemoryPlan(max(1, longest_sequence), True, per_token, False)


# The process itself: Python, torch, transformers and peft loaded (measured on this CPU: 516 MB of RSS), the
# tokenizer and a training pass's working set beyond its activations (the frozen head's chunks, gradients in
# flight, the allocator's free blocks); on a GPU the CUDA context and the kernels' workspace. Measured against
# peak RSS (tests/perf/bench_memory_estimate.py, SmolLM2-135M LoRA r16 all-linear, fp32, 2 cores), estimate /
# peak in MB: one longest example a micro-batch, 57 tokens 1,454 / 1,170, 253 tokens 1,681 / 1,248, 1,021
# tokens 2,572 / 1,781; the CPU default plan (256 MB of activations), 57 tokens 1,643 / 1,328, 253 tokens
# (recomputed) 1,644 / 1,427, 1,021 tokens (recomputed) 1,772 / 1,757. Never short, at most 1.44x over (the per-token
# activations are counted high on purpose: the engine's plan uses them too). Attention keeps no matrix: on a
# CPU, SDPA without a mask runs torch's flash kernel for the CPU (it keeps each row's log-sum-exp only).
RUNTIME_BYTES = 800 * 2**20
LORA_RANK = 16  # the engine's default (TrainingConfig.lora_r)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a training task, by part (bytes)."""

    weights: int  # the model's weights (frozen bf16 for LoRA on a bf16 GPU; fp32 otherwise)
    gradients: int  # fp32, of the trainable parameters
    optimizer: int  # AdamW's two fp32 moments (and fp32 master weights are the weights above)
    activations: int  # a CPU's pass budget, or the smallest micro-batch: the longest sequence (recomputed if must be)
    runtime: int
    gradient_checkpointing: bool
    available: int  # the node's memory the task runs in

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.runtime

    @property
    def fits(self) -> bool:
        return self.total <= self.available

    @property
    def total_gb(self) -> float:
        return self.total / 2**30

    @property
    def available_gb(self) -> float:
        return self.available / 2**30


def estimate_training_memory(
    *,
    shape: ModelShape,
    training_type: str,
    bf16: bool,
    longest_sequence: int,
    available: int,
    parameters: int | None = None,
    lora_rank: int = LORA_RANK,
    activation_budget: int | None = None,
) -> MemoryEstimate:
    """What a task needs at its peak on a node with ``available`` bytes (one device's, on a GPU).

    Full fine-tuning keeps fp32 master weights (AdamW updates them; bf16 only under autocast), so
    16 bytes a parameter before activations; LoRA keeps the frozen weights in bf16 on a bf16 GPU
    (fp32 on a CPU) and trains fp32 adapters. Activations are those of one micro-batch holding the
    longest sequence (the engine never splits one): all kept when that fits, else recomputed
    (gradient checkpointing), as :func:`plan_micro_batches` decides in the engine.

    ``activation_budget`` is what a CPU run gives activations (``TrainingConfig.activation_memory_mb``): the
    engine fills it with micro-batches and recomputes when the longest sequence does not fit it, so the
    estimate counts the budget (or the longest sequence, recomputed, where that is more). Without it (a GPU,
    where the engine takes what it finds free) activations are those of the smallest micro-batch."""
    parameters = parameters or shape.parameters()
    if training_type == "full":
        weights, trainable = 4 * parameters, parameters
    else:
        trainable = shape.lora_parameters(lora_rank)
        weights = (2 if bf16 else 4) * parameters + 4 * trainable
    static = weights + 12 * trainable + RUNTIME_BYTES
    free = available - static if activation_budget is None else activation_budget
    plan = plan_micro_batches(
        free_bytes=free,
        shape=shape,
        longest_sequence=longest_sequence,
        dtype_bytes=2 if bf16 else 4,
        # the head's logits counted even for LoRA, whose fused head keeps none (the engine's plan does not count
        # them): the estimate stays the upper bound measured against real runs (tests/perf/bench_memory_estimate.py)
    )
    tokens = max(1, longest_sequence) if activation_budget is None else plan.micro_batch_tokens
    return MemoryEstimate(
        weights=weights,
        gradients=4 * trainable,
        optimizer=8 * trainable,
        activations=plan.bytes_per_token * tokens,
        runtime=RUNTIME_BYTES,
        gradient_checkpointing=plan.gradient_checkpointing,
        available=available,
    )
