"""Micro-batches of packed sequences, and the attention that keeps packed examples apart.

A training step takes ``batch_size`` examples. With packing, all their token
sequences are laid end to end in one row (or a few rows when they exceed the token
budget of a micro-batch), position ids restart at 0 for every sequence, and
attention runs per sequence (causal SDPA on each slice), so an example never sees
another one and no compute is spent on padding or on masked-out blocks. Without
packing, each sequence is its own row, right-padded to the longest of the
micro-batch (the naive baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTN_NAME = "segmented_sdpa"


@dataclass
class MicroBatch:
    """Tensors for one forward pass.

    ``src`` indexes the flattened hidden states whose next token carries a label,
    ``tgt`` holds those next tokens and ``seq`` the index (within this micro-batch)
    of the sequence each label belongs to; ``segments`` lists per row the
    (start, end) slices that attend only within themselves.
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


def build_micro_batches(
    units: Sequence[Sequence[tuple[list[int], list[bool]]]],
    unit_ids: Sequence[int],
    token_budget: int,
    packing: bool,
    pad_id: int,
) -> list[MicroBatch]:
    """Group the given units (an SFT example = 1 sequence, a DPO pair = 2) into
    micro-batches of at most ``token_budget`` tokens (padded size), never splitting a unit."""
    groups: list[list[int]] = []
    current: list[int] = []
    current_rows: list[int] = []  # sequence lengths in the current group
    for uid in unit_ids:
        lengths = [len(ids) for ids, _ in units[uid]]
        trial = current_rows + lengths
        size = sum(trial) if packing else len(trial) * max(trial)
        if current and size > token_budget:
            groups.append(current)
            current, current_rows = [], []
        current.append(uid)
        current_rows.extend(lengths)
    if current:
        groups.append(current)
    return [_assemble(units, group, packing, pad_id) for group in groups]


def _assemble(units, group: list[int], packing: bool, pad_id: int) -> MicroBatch:
    sequences = [seq for uid in group for seq in units[uid]]
    if packing:
        rows = [sequences]
    else:
        rows = [[seq] for seq in sequences]
    width = max(sum(len(ids) for ids, _ in row) for row in rows)
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
    )


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


def register_attention() -> str:
    """Register the segmented attention with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, segmented_sdpa_forward)
    # generation without segments still needs SDPA's mask; training passes no attention
    # mask, and the (cheap) mask built from position ids is then ignored
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    return ATTN_NAME
