"""Run by tests/test_vllm_plugin.py with vLLM's Python (.venv-vllm), the plugin's folder on PYTHONPATH: the
console's multi-LoRA linear (deployments/vllm_plugin/console_vllm/punica.py) against a float64 reference of
``y += (x @ A[slot]^T) @ B[slot]^T * scale`` per row (rows without an adapter unchanged), with its C kernel and
with its grouped products, in float32 and bfloat16, on the layer shapes of SmolLM2-135M; vLLM's own op on the
same inputs for scale. Then the embedding's and the LM head's LoRA, which the wrapper skips for a batch whose
adapters have zero weights there: equal to vLLM's op on the same inputs, with an adapter that has them, without,
and after one is written into a slot in place. Prints one JSON object."""

import json
from pathlib import Path

import torch


def vllm_ops(indices: torch.Tensor, cls=None):
    """vLLM's own CPU wrapper (or ``cls``) set up for a batch with these rows' adapters, as its V1 runner leaves
    it (which always takes the prefill ops, a row sampled a token); tests/perf/bench_lora_ops.py times it."""
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    wrapper = (cls or PunicaWrapperCPU)(4096, 512, "cpu")
    rows = indices.numel()
    wrapper._token_lora_indices[:rows].copy_(indices)
    wrapper._sampler_indices[:rows].copy_(indices)
    wrapper.indices_len = [rows] * 4
    wrapper._update_prefill_metadata(wrapper.token_lora_indices)
    wrapper.is_prefill = True
    if cls is not None:
        wrapper.group(wrapper.token_lora_indices)
    return wrapper


def reference(x, y0, a, b, sizes, indices) -> torch.Tensor:
    """``y0 + 2 * (x @ A[slot]^T) @ B[slot]^T`` row by row in float64 (rows without an adapter unchanged)."""
    want = y0.double().clone()
    offset = 0
    for a_s, b_s, size in zip(a, b, sizes, strict=True):
        for row, slot in enumerate(indices.tolist()):
            if slot >= 0:
                delta = (x[row].double() @ a_s[slot, 0].double().t()) @ b_s[slot, 0].double().t()
                want[row, offset : offset + size] += 2.0 * delta
        offset += size
    return want


def skipped_ops(punica) -> dict:
    """For each batch, whether the wrapper's embedding and LM-head LoRA leave exactly what vLLM's ops leave."""
    torch.manual_seed(1)
    slots, rank, dim, vocab = 4, 16, 64, 100
    emb_b = torch.zeros(slots, 1, dim, rank)
    emb_b[3] = torch.randn(1, dim, rank)  # only slot 3's adapter trained the embedding
    head_a = torch.randn(slots, 1, rank, dim)
    head_b = torch.zeros(slots, 1, vocab, rank)
    head_b[3] = torch.randn(1, vocab, rank)
    found = {}
    for case, indices in {"zero weights": [0, 1, 1, 0], "one with weights": [0, 3, 3, 1]}.items():
        rows = torch.tensor(indices)
        ours = vllm_ops(rows, punica.GroupedPunicaWrapperCPU)  # one wrapper across the write, as in an instance
        for written in (False, True):
            if written:  # an adapter with weights loaded into slot 1 in place, as vLLM does: the next step uses it
                emb_b[1].copy_(torch.randn(1, dim, rank))
                head_b[1].copy_(torch.randn(1, vocab, rank))
            x_emb, y_emb = torch.randn(len(rows), rank), torch.randn(len(rows), dim)
            x_head, y_head = torch.randn(len(rows), dim), torch.randn(len(rows), vocab)
            got = {}
            for name, wrapper in (("ours", ours), ("vllm", vllm_ops(rows))):
                emb, head = y_emb.clone(), y_head.clone()
                wrapper.add_lora_embedding(emb, x_emb, emb_b, add_inputs=True)
                wrapper.add_lora_logits(head, x_head, head_a, head_b, 1.0)
                got[name] = (emb, head)
            found[f"{case}{', slot 1 rewritten' if written else ''}"] = {
                "embedding": torch.equal(got["ours"][0], got["vllm"][0]),
                "lm_head": torch.equal(got["ours"][1], got["vllm"][1]),
                "changed": not torch.equal(got["ours"][0], y_emb),
            }
        emb_b[1].zero_()
        head_b[1].zero_()
    return found


def main() -> None:
    from console_vllm import punica, register

    register()
    from vllm.platforms import current_platform

    torch.manual_seed(0)
    slots, rank = 9, 16
    layers = {"qkv": (576, (576, 192, 192)), "o": (576, (576,)), "gate_up": (576, (1536, 1536)), "down": (1536, (576,))}
    layers["odd"] = (37, (7, 5))  # sizes and a rank (below) that are not multiples of the kernel's four
    ranks = {"odd": 6}
    spread = {"odd": 0.5}  # its few products still make a change as large as the others' (bf16 rounds y itself)
    cases = {
        "decode, one adapter": torch.full((8,), 3),
        # (and then slot 2 rewritten in place, as vLLM loads another adapter into it: the next step must use it)
        "decode, 7 adapters and a base row": torch.tensor([0, 1, 2, 3, 4, 5, 6, -1]),
        "prefill, 4 adapters in runs": torch.tensor([2] * 40 + [-1] * 30 + [5] * 90 + [0] * 100 + [8] * 40),
        "prefill, one adapter": torch.full((120,), 7),
        "no adapter": torch.full((5,), -1),
    }
    out: dict = {
        "wrapper": current_platform.get_punica_wrapper(),
        "kernel": punica._KERNEL is not None,
        "results": [],
    }
    for dtype in (torch.float32, torch.bfloat16):
        weights = {
            name: (
                tuple(
                    (torch.randn(slots, 1, ranks.get(name, rank), fan_in) * spread.get(name, 0.05)).to(dtype)
                    for _ in sizes
                ),
                tuple(
                    (torch.randn(slots, 1, size, ranks.get(name, rank)) * spread.get(name, 0.05)).to(dtype)
                    for size in sizes
                ),
            )
            for name, (fan_in, sizes) in layers.items()
        }
        for case, indices in cases.items():
            # the products only; both (an adapter with over 50 rows the products', the others the kernel); the kernel
            for kernel_rows, path in ((0, "grouped"), (50, "both"), (10**6, "kernel")):
                punica.KERNEL_ROWS = kernel_rows
                worst = vllm_worst = 0.0
                for name, (fan_in, sizes) in layers.items():
                    a, b = weights[name]
                    x = torch.randn(indices.numel(), fan_in).to(dtype)
                    y0 = torch.randn(indices.numel(), sum(sizes)).to(dtype)
                    want = reference(x, y0, a, b, sizes, indices)
                    scale = (want - y0.double()).abs().max().item() or 1.0
                    wrapper = punica.GroupedPunicaWrapperCPU(4096, 512, "cpu")
                    wrapper.group(indices)
                    got = y0.clone()
                    wrapper.add_lora_linear(got, x, a, b, 2.0, sizes)
                    worst = max(worst, (got.double() - want).abs().max().item() / scale)
                    if case == "decode, 7 adapters and a base row":
                        # vLLM loads another adapter into slot 2 (in place, as it does): the next step uses it
                        fresh = [b_s[3].flip(-1) for b_s in b]  # weights of the same size, another adapter's
                        saved = [b_s[2].clone() for b_s in b]
                        for b_s, new in zip(b, fresh, strict=True):
                            b_s[2].copy_(new)
                        again = y0.clone()
                        wrapper.add_lora_linear(again, x, a, b, 2.0, sizes)
                        expected = reference(x, y0, a, b, sizes, indices)
                        rewritten = (again.double() - expected).abs().max().item() / (
                            (expected - y0.double()).abs().max().item() or 1.0
                        )
                        worst = max(worst, rewritten, 0.0 if (again != got).any() else float("inf"))
                        for b_s, old in zip(b, saved, strict=True):
                            b_s[2].copy_(old)
                    if (indices >= 0).all():  # vLLM's op gives a -1 row the last slot's adapter
                        theirs = vllm_ops(indices)
                        ref = y0.clone()
                        theirs.add_lora_linear(ref, x, a, b, 2.0, sizes)
                        vllm_worst = max(vllm_worst, (ref.double() - want).abs().max().item() / scale)
                out["results"].append(
                    {
                        "dtype": str(dtype).removeprefix("torch."),
                        "case": case,
                        "path": path,
                        "error": worst,
                        "vllm_error": vllm_worst,
                    }
                )
    out["skipped_ops"] = skipped_ops(punica)
    # the OpenMP runtimes in the process once the kernel ran (one: the kernel's is PyTorch's own)
    maps = Path("/proc/self/maps").read_text().splitlines()
    out["openmp_runtimes"] = sorted({line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
