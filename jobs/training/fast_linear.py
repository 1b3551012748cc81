"""Linear layers with frozen weights through oneDNN on CPU.

On this machine (AMD EPYC, AVX-512) PyTorch's default fp32 matmul (MKL) reaches
about 185 GFLOP/s on two cores, while oneDNN's linear (``mkldnn._linear_pointwise``,
the kernel torch.compile uses for CPU) reaches about 400 on the same shapes, fp32
both. The frozen weights of LoRA training (and the tied LM head) go through it, forward and
backward. The backward (grad @ W) is oneDNN's linear on the transposed *view* of the weight:
oneDNN reads the strides, so no transposed copy of the model is kept (540 MB for SmolLM2-135M),
and it is as fast as on a contiguous copy. Measured on the backward's shapes (2 cores):
0.79-0.81 ms against MKL's 1.84-1.85 ms at 220 rows, 6.5 ms against 14.2-14.3 at 1,765 rows;
with MKL there the whole engine trained at 245 tokens/s against 433 (tests/perf/bench_training.py).
Anything else (GPU, other dtypes, weights that train) keeps ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_AVAILABLE: bool | None = None


def available() -> bool:
    global _AVAILABLE
    if _AVAILABLE is None:
        ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        if ok:
            try:  # some builds register the op without a CPU kernel
                a, w = torch.randn(3, 4), torch.randn(5, 4)
                ok = torch.allclose(
                    torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""), a @ w.t(), atol=1e-5
                )
            except (RuntimeError, NotImplementedError):
                ok = False
        _AVAILABLE = ok
    return _AVAILABLE


def _dense_linear(x2d: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x2d, weight, None, "none", [], "")


def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not weight.requires_grad
        and not torch.is_autocast_enabled("cpu")  # bf16 autocast: F.linear, which autocast casts
        and available()
    )


class FrozenLinearFn(torch.autograd.Function):
    """y = x W^T (+ b) with W (and b) frozen; x is 2-D."""

    @staticmethod
    def forward(ctx, x2d, weight, bias):
        ctx.save_for_backward(weight)
        out = _dense_linear(x2d, weight)
        return out.add_(bias) if bias is not None else out

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_x = transposed_linear(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_x, None, None


def transposed_linear(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """grad @ W (the input gradient of x W^T) through oneDNN, on a view of W: no copy is made."""
    return _dense_linear(grad.contiguous(), weight.t())


def frozen_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a frozen weight, through oneDNN when it can (any leading dims)."""
    if not usable(x, weight) or (bias is not None and bias.requires_grad):
        return F.linear(x, weight, bias)
    shape = x.shape
    x2d = x.reshape(-1, shape[-1])
    if not x2d.is_contiguous():
        x2d = x2d.contiguous()
    if torch.is_grad_enabled() and x.requires_grad:
        out = FrozenLinearFn.apply(x2d, weight, bias)
    else:
        out = _dense_linear(x2d, weight)
        if bias is not None:
            out = out.add_(bias)
    return out.view(*shape[:-1], out.shape[-1])


def _frozen_forward(self, x: torch.Tensor) -> torch.Tensor:
    return frozen_linear(x, self.weight, self.bias)


def patch_frozen_linears(model) -> int:
    """Route the model's plain nn.Linear layers with frozen weights through oneDNN; returns how many."""
    import types

    if not available():
        return 0
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not module.weight.requires_grad:
            module.forward = types.MethodType(_frozen_forward, module)
            count += 1
    return count
