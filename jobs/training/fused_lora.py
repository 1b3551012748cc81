"""A fused forward/backward for PEFT LoRA linear layers (plain LoRA, no dropout).

PEFT computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as separate ops;
on a CPU each elementwise op over the layer output (the scaling multiply, the add,
and their backward) costs as much time as a skinny matmul, 210 times per pass for
SmolLM2 with all-linear targets. Here the base matmul and the LoRA up-projection
are accumulated in place (``addmm_`` with ``alpha=scaling``), and the backward computes
exactly the four small gradients plus an in-place ``addmm_`` for the input gradient. The
parameters stay PEFT's, so saving, loading and ``disable_adapter()`` are unchanged.
"""

from __future__ import annotations

import types

import torch

from . import fast_linear


class _LoraLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, weight, bias, lora_a, lora_b, scaling: float, onednn: bool):
        xa = x2d @ lora_a.t()  # (N, r)
        if onednn:  # oneDNN for the big frozen matmul (see fast_linear.py)
            out = fast_linear._dense_linear(x2d, weight)
            if bias is not None:
                out.add_(bias)
        else:
            out = torch.addmm(bias, x2d, weight.t()) if bias is not None else x2d @ weight.t()
        # in place: addmm into a new tensor would first copy the whole base output
        out.addmm_(xa, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x2d, weight, lora_a, lora_b, xa)
        ctx.onednn = onednn
        ctx.scaling = scaling
        ctx.has_bias = bias is not None
        ctx.need_x = ctx.needs_input_grad[0]
        return out

    @staticmethod
    def backward(ctx, grad):
        x2d, weight, lora_a, lora_b, xa = ctx.saved_tensors
        s = ctx.scaling
        grad_b = (grad.t() @ xa).mul_(s)  # (out, r)
        grad_xa = (grad @ lora_b).mul_(s)  # (N, r)
        grad_a = grad_xa.t() @ x2d  # (r, in)
        grad_x = None
        if ctx.need_x:
            # oneDNN on a transposed view of the weight: no transposed copy of the model (fast_linear.py)
            grad_x = fast_linear.transposed_linear(grad, weight) if ctx.onednn else grad @ weight
            grad_x.addmm_(grad_xa, lora_a)
        # the base weight and bias are frozen: no gradients for them
        return grad_x, None, None, grad_a, grad_b, None, None


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    adapters = self.active_adapters
    if (
        self.disable_adapters
        or self.merged
        or args
        or kwargs
        or len(adapters) != 1
        or adapters[0] not in self.lora_A
        or adapters[0] in self.lora_variant
        or self.base_layer.weight.requires_grad
        or torch.is_autocast_enabled(x.device.type)  # fp32 math only: autocast takes PEFT's path
    ):
        return self._peft_forward(x, *args, **kwargs)
    name = adapters[0]
    lora_a = self.lora_A[name].weight
    lora_b = self.lora_B[name].weight
    if x.dtype != lora_a.dtype:
        return self._peft_forward(x, *args, **kwargs)
    shape = x.shape
    weight = self.base_layer.weight
    x2d = x.reshape(-1, shape[-1])
    onednn = fast_linear.usable(x, weight)
    if onednn:
        x2d = x2d.contiguous()
    out = _LoraLinearFn.apply(x2d, weight, self.base_layer.bias, lora_a, lora_b, self.scaling[name], onednn)
    return out.view(*shape[:-1], out.shape[-1])


def fuse_lora_layers(model, dropout: float) -> int:
    """Switch the model's PEFT LoRA Linear layers to the fused path; returns how many.

    With dropout the PEFT path is kept (the fused one has no dropout)."""
    if dropout:
        return 0
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear and not getattr(module, "fan_in_fan_out", False):
            module._peft_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count
