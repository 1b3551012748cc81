"""How many tokens a micro-batch may hold, and whether to recompute activations, from free memory.

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

    @classmethod
    def from_config(cls, config) -> ModelShape:
        hidden = config.hidden_size
        return cls(
            layers=config.num_hidden_layers,
            hidden=hidden,
            intermediate=getattr(config, "intermediate_size", None) or 4 * hidden,
            vocab=config.vocab_size,
        )


def activation_bytes_per_token(shape: ModelShape, *, dtype_bytes: int = 4, checkpointing: bool = False) -> int:
    """Bytes kept for the backward per token of a micro-batch (whole model), plus the head's share.

    With gradient checkpointing only each layer's input is kept, and one layer's full set is live
    at a time while it is recomputed."""
    per_layer = (8 * shape.hidden + 2 * shape.intermediate) * dtype_bytes
    body = shape.layers * shape.hidden * dtype_bytes + per_layer if checkpointing else shape.layers * per_layer
    head = int(LABELLED_FRACTION * shape.vocab * 4 * 3)  # logits are fp32: logits, log-softmax, gradient
    return body + head


@dataclass(frozen=True)
class MemoryPlan:
    micro_batch_tokens: int
    gradient_checkpointing: bool
    bytes_per_token: int
    fits: bool  # False: even the longest sequence, recomputed, does not fit


def plan_micro_batches(
    *, free_bytes: int, shape: ModelShape, longest_sequence: int, dtype_bytes: int = 4, cap: int = MAX_TOKENS
) -> MemoryPlan:
    """The token budget of a micro-batch that fits ``free_bytes`` (memory left for activations).

    A micro-batch never splits a sequence, so it must hold the longest one: when it does not fit
    with every activation kept, gradient checkpointing is switched on (recompute in the backward)."""
    free_bytes = max(0, int(free_bytes))
    for checkpointing in (False, True):
        per_token = activation_bytes_per_token(shape, dtype_bytes=dtype_bytes, checkpointing=checkpointing)
        tokens = free_bytes // per_token
        if tokens >= max(longest_sequence, 1):
            return MemoryPlan(max(min(tokens, cap), longest_sequence), checkpointing, per_token, True)
    return MemoryPlan(max(1, longest_sequence), True, per_token, False)
