"""Rotary position embedding with a hand-written backward, for Llama-family models.

transformers applies RoPE as ``x * cos + rotate_half(x) * sin`` where ``rotate_half``
slices and concatenates; autograd's backward of each slice writes into a zero tensor
of the full size. The rotation R is linear with R^T = -R, so the input gradient is
simply ``g * cos - rotate_half(g * sin)``: same numbers, fewer passes over memory.
"""

from __future__ import annotations

import torch


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class _RopeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return torch.addcmul(x * cos, _rotate_half(x), sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return grad * cos - _rotate_half(grad * sin), None, None


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """Drop-in for ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb``."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    if cos.requires_grad or sin.requires_grad:  # never the case for RoPE tables; be exact anyway
        return (q * cos) + (_rotate_half(q) * sin), (k * cos) + (_rotate_half(k) * sin)
    return _RopeFn.apply(q, cos, sin), _RopeFn.apply(k, cos, sin)


def patch_llama_rope() -> None:
    """Use the function above in transformers' Llama attention (idempotent, same results)."""
    from transformers.models.llama import modeling_llama

    modeling_llama.apply_rotary_pos_emb = apply_rotary_pos_emb
