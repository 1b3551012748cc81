"""Log-probabilities of the labelled tokens through a frozen LM head, without keeping the logits.

The plain path (``F.cross_entropy(head(hidden))``) keeps, for the backward, the logits and their
log-softmax: two fp32 tensors of (labelled tokens x vocabulary) each, 94 MB for 240 labelled tokens
of SmolLM2's 49,152-token vocabulary, and a third as large for their gradient. With the head frozen
(LoRA; the tied embedding does not train) the gradient of each token's log-probability with respect
to its hidden state is known in the forward: ``(onehot - softmax) @ W``. It is computed there, a
chunk of tokens at a time, and only that (tokens x hidden, 2.3 KB a token) is kept; the backward
scales it by the incoming gradient. Same math as the plain path (``test_fused_head_matches_plain``),
no extra matmul, and the head's memory no longer grows with the vocabulary.
"""

from __future__ import annotations

import torch

from .fast_linear import frozen_linear

CHUNK_TOKENS = 128


class _FrozenHeadLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, keep_grad):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if keep_grad else None
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            rows = slice(start, start + CHUNK_TOKENS)
            logits = frozen_linear(hidden[rows], weight, bias).float()
            tgt = target[rows]
            logps = torch.log_softmax(logits, dim=-1)
            out[rows] = logps.gather(1, tgt[:, None]).squeeze(1)
            if keep_grad:
                # d logp[t] / d logits = onehot(t) - softmax; reuse the buffer for it
                grad_logits = logps.exp_().neg_()
                grad_logits.scatter_add_(1, tgt[:, None], torch.ones_like(tgt, dtype=grad_logits.dtype)[:, None])
                grad_hidden[rows] = grad_logits.to(weight.dtype) @ weight
            del logits, logps
        if keep_grad:
            ctx.save_for_backward(grad_hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_out[:, None].to(grad_hidden.dtype), None, None, None, None


def usable(weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return not weight.requires_grad and (bias is None or not bias.requires_grad)


def frozen_head_logps(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
) -> torch.Tensor:
    """log p(target | hidden) per row (fp32), through the frozen head ``weight`` (and ``bias``)."""
    # needs_input_grad says True under no_grad too: evaluation must not pay for a gradient
    keep_grad = torch.is_grad_enabled() and hidden.requires_grad
    return _FrozenHeadLogps.apply(hidden, weight, bias, target, keep_grad)
