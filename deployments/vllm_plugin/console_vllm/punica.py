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
products an adapter, each costing more to dispatch than to compute, so the rows of every adapter with up to
``KERNEL_ROWS`` rows in the batch go to one call of a small C kernel (:mod:`console_vllm.kernel`) a layer, every
slice of it, row by row, its rows split between PyTorch's OpenMP threads; an adapter with more rows (a long
prompt) gets the products, which win there.

The LM head's and the embedding's LoRA are skipped for a batch whose adapters have zero weights there (every
adapter the console trains: PEFT's ``all-linear`` leaves both out), which vLLM computes for every sampled row and
every token; a batch with an adapter that has them keeps vLLM's op, as do the sharded layers.
"""

import ctypes
import itertools
import os
from typing import Any, NamedTuple

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from . import kernel

# Same run, two threads (an instance's on a 2-CPU machine), float32, a layer of SmolLM2-135M: the kernel costs
# about 42 us a call and 6.3 us a row; the grouped products about 180 us an adapter and 3.5 us a row: the kernel
# wins up to about 50 rows an adapter (tests/perf/bench_lora_ops.py; on one thread 13 us a row against 300 us and
# 9 us, 24 rows was the limit).
KERNEL_ROWS = int(os.environ.get("CONSOLE_VLLM_KERNEL_ROWS", "48"))
_KERNEL = kernel.load() if KERNEL_ROWS > 0 else None
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


class Grouping(NamedTuple):
    order: torch.Tensor  # the rows of these adapters, sorted by adapter
    slots: list[int]  # the adapters, in that order
    counts: list[int]  # and how many rows each has
    whole: bool  # every row of the batch on one adapter


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    _tokens: int = -1  # the batch grouped: its length, -1 before the first step
    _all: Grouping | None = None  # every row with an adapter
    _large: Grouping | None = None  # the rows of adapters with over KERNEL_ROWS rows (the products'), or None
    _kernel_indices: torch.Tensor | None = None  # the rows' adapters for the kernel (int64; -1 for the products' rows)
    _layers: dict | None = None  # a layer's weights as the kernel takes them, by the layer's tuple of A weights
    _weighted: dict | None = None  # the LM head's and embedding's B, by id: (the tensor, version, slots with weights)

    @property
    def _slots(self) -> list[int]:
        return self._all.slots if self._all is not None else []

    def update_metadata(self, mapping: Any, lora_index_to_id: Any, max_loras: int, vocab_size: int, **kwargs: Any):
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self.group(self.token_lora_indices)

    def group(self, indices: torch.Tensor) -> None:
        """Sort this step's rows by adapter (an index per row, -1 for none), and split the adapters between the
        kernel (up to KERNEL_ROWS rows) and the products."""
        order = torch.argsort(indices, stable=True)
        slots, counts = torch.unique_consecutive(indices.index_select(0, order), return_counts=True)
        slot_list, count_list = slots.tolist(), counts.tolist()
        if slot_list and slot_list[0] < 0:  # rows without an adapter sort first
            order = order[count_list[0] :]
            slot_list, count_list = slot_list[1:], count_list[1:]
        self._tokens = n = indices.numel()
        whole = len(slot_list) == 1 and count_list[0] == n
        self._all = Grouping(order, slot_list, count_list, whole)
        large = [i for i, count in enumerate(count_list) if count > KERNEL_ROWS]
        indices = indices.to(torch.int64)
        if _KERNEL is None or len(large) == len(slot_list):  # no kernel, or nothing for it
            self._kernel_indices, self._large = None, self._all
        elif not large:
            self._kernel_indices, self._large = indices.contiguous(), None
        else:
            starts = [0, *itertools.accumulate(count_list)]
            rows = torch.cat([order[starts[i] : starts[i + 1]] for i in large])
            self._kernel_indices = indices.index_fill(0, rows, -1).contiguous()
            large_slots, large_counts = [slot_list[i] for i in large], [count_list[i] for i in large]
            self._large = Grouping(rows, large_slots, large_counts, len(large) == 1 and rows.numel() == n)

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
        if x.shape[0] != self._tokens or self._all is None:  # not the grouped batch: vLLM's own ops
            if not add_inputs:
                out.zero_()
            return super().add_lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer)
        if not add_inputs:
            out.zero_()
        if not self._all.slots:
            return y
        grouping: Grouping | None = self._all
        if self._kernel_indices is not None and self._kernel(
            out, x, lora_a_stacked, lora_b_stacked, scale, output_slices
        ):
            grouping = self._large
        if grouping is not None:
            self._products(out, x, lora_a_stacked, lora_b_stacked, scale, output_slices, grouping)
        return y

    @staticmethod
    def _products(out, x, lora_a_stacked, lora_b_stacked, scale, output_slices, grouping: Grouping) -> None:
        """Two plain products an adapter of ``grouping`` on its rows, added to them."""
        order = grouping.order
        rows = x.float() if grouping.whole else x.index_select(0, order).float()
        offset = 0
        for a, b, size in zip(lora_a_stacked, lora_b_stacked, output_slices, strict=True):
            # a: adapters x 1 x rank x in; b: adapters x 1 x out x rank (padded to the slice's width or wider)
            width = min(size, b.shape[-2])
            if grouping.whole:
                slot = grouping.slots[0]
                up = (rows @ a[slot, 0].float().t()) @ b[slot, 0, :width].float().t()
            else:
                parts = [
                    (part @ a[slot, 0].float().t()) @ b[slot, 0, :width].float().t()
                    for slot, part in zip(grouping.slots, rows.split(grouping.counts), strict=True)
                ]
                up = torch.cat(parts)
            if scale != 1.0:
                up.mul_(scale)
            target = out[:, offset : offset + width]
            if grouping.whole:
                target += up.to(out.dtype)
            else:
                target.index_add_(0, order, up.to(out.dtype))
            offset += size

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
        indices = self._kernel_indices
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
