"""Multi-LoRA linear layers on a CPU, grouped by adapter instead of gathered by token.

vLLM's CPU ops (``vllm/lora/ops/torch_ops``) compute every LoRA linear as ``weights[token_indices]`` (a copy of
the padded ``rank x features`` matrices for every token of the batch, for every slice of every layer) and a
batched product a token. A batch holds few adapters, so this wrapper sorts the batch's tokens by adapter once a
step (:meth:`GroupedPunicaWrapperCPU.group`) and computes each linear as two plain matrix products an adapter
present, on that adapter's rows: ``(x @ A^T) @ B^T``, added back to the rows it came from. A batch on one
adapter (the usual case) is two products on the whole batch. The products run in float32 (vLLM's down-projection
does too; small bfloat16 products were slower on a CPU thread), the sum is added in the layer's dtype. Tokens
without an adapter (index -1) are left as they are; vLLM's ``weights[-1]`` would apply the last slot's adapter.

A batch of a few rows on several adapters (decoding: each request its own fine-tune) would be a pair of tiny
products an adapter, each costing more to dispatch than to compute, so up to ``KERNEL_ROWS`` rows one call of a
small C kernel (:mod:`console_vllm.kernel`) does a whole layer, every slice of it, row by row; it is used
while the batch has up to ``KERNEL_ROWS`` rows an adapter present (past that the products win).

The LM head's and the embedding's LoRA are skipped for a batch whose adapters have zero weights there (every
adapter the console trains: PEFT's ``all-linear`` leaves both out), which vLLM computes for every sampled row and
every token; a batch with an adapter that has them keeps vLLM's op, as do the sharded layers.
"""

import ctypes
import os
from typing import Any

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from . import kernel

# The kernel reads each row's adapter weights (about 13 us a row a layer of SmolLM2-135M in float32, 21 in bf16,
# on one Xeon thread); the grouped products cost a fixed 300 us or so an adapter a layer, then less a row (9 us in
# float32, 13 in bf16, on one adapter): the kernel is used up to
# KERNEL_ROWS rows an adapter present in the batch, at most KERNEL_MAX_ROWS (tests/perf/bench_lora_ops.py).
KERNEL_ROWS = int(os.environ.get("CONSOLE_VLLM_KERNEL_ROWS", "24"))
KERNEL_MAX_ROWS = int(os.environ.get("CONSOLE_VLLM_KERNEL_MAX_ROWS", "256"))
_KERNEL = kernel.load() if KERNEL_ROWS > 0 else None
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    _tokens: int = -1  # the batch grouped: its length, -1 before the first step
    _order: torch.Tensor | None = None  # rows with an adapter, sorted by adapter
    _slots: list[int] = []  # the adapters present, in that order
    _counts: list[int] = []  # and how many rows each has
    _whole: bool = False  # every row on one adapter
    _indices: torch.Tensor | None = None  # the rows' adapters (int64, contiguous), for the kernel
    _layers: dict | None = None  # a layer's weights as the kernel takes them, by the layer's tuple of A weights
    _weighted: dict | None = None  # the LM head's and embedding's B, by id: (the tensor, version, slots with weights)

    def update_metadata(self, mapping: Any, lora_index_to_id: Any, max_loras: int, vocab_size: int, **kwargs: Any):
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self.group(self.token_lora_indices)

    def group(self, indices: torch.Tensor) -> None:
        """Sort this step's rows by adapter (an index per row, -1 for none)."""
        order = torch.argsort(indices, stable=True)
        slots, counts = torch.unique_consecutive(indices.index_select(0, order), return_counts=True)
        slot_list, count_list = slots.tolist(), counts.tolist()
        if slot_list and slot_list[0] < 0:  # rows without an adapter sort first
            order = order[count_list[0] :]
            slot_list, count_list = slot_list[1:], count_list[1:]
        self._tokens = indices.numel()
        self._indices = indices.to(torch.int64).contiguous()
        self._order = order
        self._slots, self._counts = slot_list, count_list
        self._whole = len(slot_list) == 1 and count_list[0] == self._tokens

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer: tuple[torch.Tensor, ...] | None = None,
        add_inputs: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = y.view(-1, y.shape[-1])
        x = x.reshape(-1, x.shape[-1])
        if x.shape[0] != self._tokens or self._order is None:  # not the grouped batch: vLLM's own ops
            if not add_inputs:
                out.zero_()
            return super().add_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer)
        if not add_inputs:
            out.zero_()
        if not self._slots:
            return y
        if _KERNEL is not None and self._tokens <= min(KERNEL_MAX_ROWS, KERNEL_ROWS * len(self._slots)):
            if self._kernel(out, x, lora_a_stacked, lora_b_stacked, scale, output_slices):
                return y
        order = self._order
        rows = x.float() if self._whole else x.index_select(0, order).float()
        offset = 0
        for a, b, size in zip(lora_a_stacked, lora_b_stacked, output_slices, strict=True):
            # a: adapters x 1 x rank x in; b: adapters x 1 x out x rank (padded to the slice's width or wider)
            width = min(size, b.shape[-2])
            if self._whole:
                slot = self._slots[0]
                up = (rows @ a[slot, 0].float().t()) @ b[slot, 0, :width].float().t()
            else:
                parts = [
                    (part @ a[slot, 0].float().t()) @ b[slot, 0, :width].float().t()
                    for slot, part in zip(self._slots, rows.split(self._counts), strict=True)
                ]
                up = torch.cat(parts)
            if scale != 1.0:
                up.mul_(scale)
            target = out[:, offset : offset + width]
            if self._whole:
                target += up.to(out.dtype)
            else:
                target.index_add_(0, order, up.to(out.dtype))
            offset += size
        return y

    def add_lora_logits(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        scale: float,
        *,
        buffer: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        present = set(torch.unique(self.sampler_indices).tolist())
        if not present & self._weighted_slots(lora_b_stacked):
            return y
        return super().add_lora_logits(y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs)

    def add_lora_embedding(
        self, y: torch.Tensor, x: torch.Tensor, lora_b_stacked: torch.Tensor, add_inputs: bool = True, **kwargs: Any
    ) -> torch.Tensor:
        # (the embedding's A is looked up by vLLM's layer before this; only the expand is left)
        if x.shape[0] == self._tokens and not set(self._slots) & self._weighted_slots(lora_b_stacked):
            return y
        super().add_lora_embedding(y, x, lora_b_stacked, add_inputs, **kwargs)
        return y

    def _weighted_slots(self, lora_b_stacked: torch.Tensor) -> frozenset[int]:
        """The slots whose B (the LM head's or the embedding's) is not all zeros; found again only when vLLM has
        written the weights (an adapter loaded into a slot or reset: the tensor's version counter moves)."""
        if self._weighted is None:
            self._weighted = {}
        version = lora_b_stacked._version
        seen = self._weighted.get(id(lora_b_stacked))
        if seen is None or seen[0] is not lora_b_stacked or seen[1] != version:
            flat = lora_b_stacked.reshape(lora_b_stacked.shape[0], -1)
            slots = frozenset(torch.nonzero(flat.abs().amax(dim=1)).flatten().tolist())
            seen = self._weighted[id(lora_b_stacked)] = (lora_b_stacked, version, slots)
        return seen[2]

    def _kernel(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
    ) -> bool:
        """One kernel call for the layer; False where its tensors are not laid out as the kernel takes them."""
        dtype = _DTYPES.get(x.dtype)
        if dtype is None or out.dtype != x.dtype or x.stride(-1) != 1 or out.stride(-1) != 1:
            return False
        if self._layers is None:
            self._layers = {}
        key = id(lora_a_stacked)
        layer = self._layers.get(key)
        pointers = [t.data_ptr() for t in (*lora_a_stacked, *lora_b_stacked)]
        if layer is None or layer[0] is not lora_a_stacked or layer[2] != pointers:
            layer = (lora_a_stacked, self._prepare(lora_a_stacked, lora_b_stacked, output_slices, x), pointers)
            self._layers[key] = layer
        args = layer[1]
        if args is None:
            return False
        indices = self._indices
        assert indices is not None
        status = _KERNEL(  # type: ignore[misc]
            dtype,
            x.shape[0],
            indices.data_ptr(),
            x.data_ptr(),
            x.stride(0),
            x.shape[1],
            out.data_ptr(),
            out.stride(0),
            *args,
            scale,
        )
        return status == 0

    @staticmethod
    def _prepare(lora_a_stacked, lora_b_stacked, output_slices, x) -> tuple | None:
        """The layer's pointers and shapes as the kernel takes them (vLLM keeps each layer's stacked weights in
        place and copies adapters into their slots; the pointers are checked every call all the same), or None
        where the layout does not fit it."""
        n = len(output_slices)
        fits = all(
            t.dtype == x.dtype and t.is_contiguous() and t.dim() == 4 and t.shape[1] == 1
            for t in (*lora_a_stacked, *lora_b_stacked)
        ) and all(a.shape[-1] == x.shape[1] for a in lora_a_stacked)
        if not fits:
            return None
        return (
            n,
            (ctypes.c_void_p * n)(*[a.data_ptr() for a in lora_a_stacked]),
            (ctypes.c_void_p * n)(*[b.data_ptr() for b in lora_b_stacked]),
            (ctypes.c_int64 * n)(*[a.shape[-2] for a in lora_a_stacked]),
            (ctypes.c_int64 * n)(*[b.shape[-2] for b in lora_b_stacked]),
            (ctypes.c_int64 * n)(
                *[min(size, b.shape[-2]) for size, b in zip(output_slices, lora_b_stacked, strict=True)]
            ),
            (ctypes.c_int64 * n)(*[sum(output_slices[:i]) for i in range(n)]),
        )
