"""Micro-batches of packed sequences, and the attention that keeps packed examples apart.

A training step takes ``batch_size`` examples. With packing, all their token
sequences are laid end to end in one row (or a few rows when they exceed the token
budget of a micro-batch), position ids restart at 0 for every sequence, and
attention runs per sequence (causal SDPA on each slice), so an example never sees
another one and no compute is spent on padding or on masked-out blocks. Without
packing, each sequence is its own row, right-padded to the longest of the
micro-batch (the naive baseline).

Which attention kernel keeps packed examples apart depends on the device
(:func:`choose_attention`). On CUDA in bf16 a variable-length flash kernel takes the
whole packed row at once with the cumulative sequence lengths (``cu_seqlens``) of
its examples, as transformers' packed-sequence path does; on a CPU, and in fp32,
the per-segment SDPA loop below (flash kernels have no fp32 and no CPU build).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTN_NAME = "segmented_sdpa"
VARLEN_NAME = "torch_varlen"  # torch.nn.attention.varlen: the flash kernel torch ships, CUDA only
FLASH_NAME = "flash_attention_2"  # transformers' own packed path, when the flash_attn package is installed
VARLEN_KERNELS = (VARLEN_NAME, FLASH_NAME)


def choose_attention(*, device: str, bf16: bool, flash_attn: bool, torch_varlen: bool) -> str:
    """The attention implementation a training model is loaded with.

    * CUDA, bf16, ``flash_attn`` installed: transformers' ``flash_attention_2``, given the packed
      row's ``cu_seq_lens`` (its varlen path), the path transformers maintains for packed training;
    * CUDA, bf16, without it: torch's own ``varlen_attn`` (the same FlashAttention-2 kernel, built
      into torch since 2.9): one kernel call a layer for the whole row, no padding, no masked
      blocks computed, nothing to install. Rejected: SDPA with a block-diagonal mask (computes and
      then discards every cross-example block: quadratic in the row's length, not in the examples'),
      flex attention with a document mask (skips those blocks too, but needs torch.compile, which
      recompiles for every new row length);
    * a CPU, or fp32 on CUDA (flash kernels have no fp32): the per-segment SDPA loop, which on a CPU
      is the fastest (no mask, no padding; measured in ``tests/perf``).
    """
    if device.startswith("cuda") and bf16:
        if flash_attn:
            return FLASH_NAME
        if torch_varlen:
            return VARLEN_NAME
    return ATTN_NAME


def kernels_available() -> dict[str, bool]:
    """Which varlen kernels this process can use (keyword arguments of :func:`choose_attention`)."""
    import importlib.util

    try:
        from torch.nn.attention import varlen  # noqa: F401

        torch_varlen = torch.cuda.is_available()
    except ImportError:  # torch before 2.9
        torch_varlen = False
    return {
        "flash_attn": importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available(),
        "torch_varlen": torch_varlen,
    }


@dataclass
class MicroBatch:
    """Tensors for one forward pass.

    ``src`` indexes the flattened hidden states whose next token carries a label,
    ``tgt`` holds those next tokens and ``seq`` the index (within this micro-batch)
    of the sequence each label belongs to; ``segments`` lists per row the
    (start, end) slices that attend only within themselves; ``cu_seqlens`` (int32) are the same
    slices as cumulative offsets into the flattened rows, as varlen kernels take them, and
    ``max_seqlen`` the longest slice.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: list[list[tuple[int, int]]]
    src: torch.Tensor
    tgt: torch.Tensor
    seq: torch.Tensor
    n_sequences: int
    n_tokens: int  # real (unpadded) tokens
    units: list[int]  # the unit (example) indices in this micro-batch, in order
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0


def build_micro_batches(
    units: Sequence[Sequence[tuple[list[int], list[bool]]]],
    unit_ids: Sequence[int],
    token_budget: int,
    packing: bool,
    pad_id: int,
    pad_multiple: int = 1,
) -> list[MicroBatch]:
    """Group the given units (an SFT example = 1 sequence, a DPO pair = 2) into
    micro-batches of at most ``token_budget`` tokens (padded size), never splitting a unit.

    ``pad_multiple``: a packed row's width is rounded up to a multiple of it, so that its shapes repeat from one
    micro-batch to the next (oneDNN builds a kernel for every new shape; see engine.pad_multiple_for)."""
    lengths = {uid: [len(ids) for ids, _ in units[uid]] for uid in unit_ids}
    groups = _greedy_groups(unit_ids, lengths, token_budget, packing)
    if packing and len(groups) > 1:
        groups = _balanced_groups(unit_ids, lengths, token_budget, len(groups)) or groups
    return [_assemble(units, group, packing, pad_id, pad_multiple) for group in groups]


def _greedy_groups(unit_ids, lengths: dict, token_budget: int, packing: bool) -> list[list[int]]:
    """Fill each micro-batch up to the budget, in order: the fewest micro-batches, the last one often small."""
    groups: list[list[int]] = []
    current: list[int] = []
    # the current group's sequences, as running figures: their count, total and longest
    rows = total = longest = 0
    for uid in unit_ids:
        unit = lengths[uid]
        size = total + sum(unit) if packing else (rows + len(unit)) * max(longest, *unit)
        if current and size > token_budget:
            groups.append(current)
            current, rows, total, longest = [], 0, 0, 0
        current.append(uid)
        rows += len(unit)
        total += sum(unit)
        longest = max(longest, *unit)
    if current:
        groups.append(current)
    return groups


def _balanced_groups(unit_ids, lengths: dict, token_budget: int, count: int) -> list[list[int]] | None:
    """The same units in order, in ``count`` packed micro-batches of about equal size, or None where that does
    not fit the budget.

    Greedy filling leaves a small last micro-batch (a step of 494 tokens at a 426-token budget: 426 + 68). On a
    CPU a micro-batch costs a pass over every frozen weight whatever its size (the model's 540 MB in fp32,
    forward and backward), so that tail costs almost as much as a full one; equal halves also lower the peak,
    which is set by the largest micro-batch. Measured on a 2-core Xeon (tests/perf/bench_training.py work):
    three micro-batches a step 246 tokens/s, two 306, one 312."""
    sizes = [sum(lengths[uid]) for uid in unit_ids]
    remaining = sum(sizes)
    groups: list[list[int]] = []
    group_sizes: list[int] = []  # each closed group's tokens, kept as it is filled
    current: list[int] = []
    size = 0
    for uid, n in zip(unit_ids, sizes, strict=True):
        left = count - len(groups)  # micro-batches still to fill, the current one included
        target = remaining / left
        # close the current micro-batch when this unit would take it further past its share than it is short
        if current and left > 1 and (size + n > token_budget or size + n - target > target - size):
            groups.append(current)
            group_sizes.append(size)
            remaining -= size
            current, size = [], 0
        current.append(uid)
        size += n
    groups.append(current)
    group_sizes.append(size)
    if len(groups) > count or any(len(g) > 1 and n > token_budget for g, n in zip(groups, group_sizes, strict=True)):
        return None
    return groups


def _assemble(units, group: list[int], packing: bool, pad_id: int, pad_multiple: int = 1) -> MicroBatch:
    sequences = [seq for uid in group for seq in units[uid]]
    if packing:
        rows = [sequences]
    else:
        rows = [[seq] for seq in sequences]
    width = max(sum(len(ids) for ids, _ in row) for row in rows)
    if packing and pad_multiple > 1:
        width = -(-width // pad_multiple) * pad_multiple
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segments: list[list[tuple[int, int]]] = []
    src: list[int] = []
    tgt: list[int] = []
    seq_index: list[int] = []
    n_seq = 0
    n_tokens = 0
    for r, row in enumerate(rows):
        offset = 0
        row_segments = []
        for ids, mask in row:
            n = len(ids)
            input_ids[r, offset : offset + n] = torch.tensor(ids, dtype=torch.long)
            position_ids[r, offset : offset + n] = torch.arange(n)
            base = r * width + offset
            # hidden state at t predicts token t+1: labels come from the mask of t+1
            for t in range(1, n):
                if mask[t]:
                    src.append(base + t - 1)
                    tgt.append(ids[t])
                    seq_index.append(n_seq)
            row_segments.append((offset, offset + n))
            offset += n
            n_seq += 1
            n_tokens += n
        if offset < width:
            # padding continues the positions of the last sequence (right padding); causal
            # attention means real tokens never look at it, and it carries no labels
            position_ids[r, offset:] = torch.arange(offset, width) - row_segments[-1][0]
            start, _ = row_segments[-1]
            row_segments[-1] = (start, width)
        segments.append(row_segments)
    bounds = [0] + [r * width + end for r, row_segments in enumerate(segments) for _start, end in row_segments]
    return MicroBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        segments=segments,
        src=torch.tensor(src, dtype=torch.long),
        tgt=torch.tensor(tgt, dtype=torch.long),
        seq=torch.tensor(seq_index, dtype=torch.long),
        n_sequences=n_seq,
        n_tokens=n_tokens,
        units=list(group),
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
        max_seqlen=max(b - a for row_segments in segments for a, b in row_segments),
    )


# the longest packed example (tokens) whose attention a bf16 run on a CPU computes in fp32 (segmented_sdpa_forward)
FP32_ATTENTION_UP_TO = 384


def segmented_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    segments: list[list[tuple[int, int]]] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA run separately on each packed sequence (query: batch, heads, len, dim).

    Without ``segments`` (e.g. generation) it behaves as transformers' SDPA attention."""
    if segments is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    longest = max(b - a for row_segments in segments for a, b in row_segments)
    if query.device.type == "cpu" and query.dtype == torch.bfloat16 and longest <= FP32_ATTENTION_UP_TO:
        # a bf16 run on a CPU attends in fp32 where its examples are short: the CPU's bf16 flash kernel's backward
        # is slower than its fp32 one there, and faster only on long sequences (tests/perf/bench_attention_dtype.py
        # prints both by length); attention is a small share of the FLOPs; the projections around it stay bf16
        with torch.autocast("cpu", enabled=False):
            out, _ = segmented_sdpa_forward(
                module, query.float(), key.float(), value.float(), attention_mask, dropout, scaling, segments, **kwargs
            )
        return out.to(query.dtype), None
    single_row = len(segments) == 1
    rows = []
    for r, row_segments in enumerate(segments):
        q, k, v = (query, key, value) if single_row else (query[r : r + 1], key[r : r + 1], value[r : r + 1])
        if len(row_segments) == 1:
            rows.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa))
            continue
        # split (not slicing one by one): its backward is one concatenation, where a slice's
        # backward writes its gradient into a zero tensor of the full size
        sizes = [b - a for a, b in row_segments]
        parts = [
            F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling, enable_gqa=gqa)
            for qs, ks, vs in zip(q.split(sizes, 2), k.split(sizes, 2), v.split(sizes, 2), strict=True)
        ]
        rows.append(torch.cat(parts, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def varlen_kernel():
    """torch's variable-length flash attention (CUDA only)."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn


@functools.lru_cache(maxsize=1)
def varlen_options() -> frozenset[str]:
    """The keyword arguments this torch's ``varlen_attn`` takes: causality is ``window_size=(-1, 0)`` since
    torch 2.12 (``is_causal=True`` before), and grouped-query heads (``enable_gqa``) came with it."""
    import inspect

    return frozenset(inspect.signature(varlen_kernel()).parameters)


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal attention over a packed micro-batch in one varlen kernel call (query: batch, heads, len, dim).

    Takes the flash-attention keyword arguments transformers forwards to every layer
    (``cu_seq_lens_q``, ``max_length_q``); without them (generation) it is transformers' SDPA."""
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    batch, heads, length, dim = query.shape
    dtype = query.dtype
    # flash kernels take bf16/fp16 only; under autocast RoPE can leave q and k in fp32
    half = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    q, k, v = (x.transpose(1, 2).reshape(-1, x.shape[1], dim).to(half) for x in (query, key, value))
    options = varlen_options()
    extra: dict = {"window_size": (-1, 0)} if "window_size" in options else {"is_causal": True}
    if heads != k.shape[1]:
        if "enable_gqa" in options:
            extra["enable_gqa"] = True
        else:  # an older torch: each key/value head repeated for its group of query heads
            k, v = (x.repeat_interleave(heads // x.shape[1], dim=1) for x in (k, v))
    out = varlen_kernel()(q, k, v, cu_seq_lens_q, cu_seq_lens_q, max_length_q, max_length_q, scale=scaling, **extra)
    return out.view(batch, length, heads, dim).to(dtype), None


def register_attention(name: str = ATTN_NAME) -> str:
    """Register our attention ``name`` with transformers (idempotent); returns the name to load with.

    ``flash_attention_2`` is transformers' own and needs no registration."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask, sdpa_mask

    if name == FLASH_NAME:
        return name
    if name == VARLEN_NAME:
        AttentionInterface.register(name, varlen_attention_forward)
        # no mask at all (a packed row of 16k tokens would otherwise build a 256 MB one per forward)
        AttentionMaskInterface.register(name, flash_attention_mask)
        return name
    AttentionInterface.register(name, segmented_sdpa_forward)
    # generation without segments still needs SDPA's mask; training passes no attention
    # mask, and the (cheap) mask built from position ids is then ignored
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
